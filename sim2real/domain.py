"""Domain parameters and randomization distributions, sampled as pure functions of a numpy Generator.

A :class:`DomainParam` describes one physical quantity of a task (its nominal value, bounds, unit);
a :class:`Distribution` says how domain randomization draws it. Every draw is clipped to the
parameter's bounds, so randomization can never build a world the env does not support.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sim2real.errors import ConfigError, allowed

Value = float | str


@dataclass(frozen=True)
class DomainParam:
    """One domain parameter: a float in [low, high], or a categorical value among `choices`."""

    name: str
    nominal: Value
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    description: str = ""
    bind: Mapping[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.choices:
            if self.nominal not in self.choices:
                raise ConfigError(
                    f"nominal {self.nominal!r} is not one of the choices ({allowed(self.choices)})",
                    key=f"params.{self.name}.nominal",
                )
            return
        if self.low is None or self.high is None:
            raise ConfigError("a float parameter needs 'low' and 'high' bounds", key=f"params.{self.name}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ConfigError(
                f"bounds [{self.low}, {self.high}] must be finite with low <= high", key=f"params.{self.name}"
            )
        if isinstance(self.nominal, str) or not self.low <= float(self.nominal) <= self.high:
            raise ConfigError(
                f"nominal {self.nominal!r} is outside the bounds [{self.low}, {self.high}]",
                key=f"params.{self.name}.nominal",
            )

    def declaration(self) -> dict[str, Any]:
        """The parameter as a task YAML's `params` entry declares it (name aside)."""
        data: dict[str, Any] = {"nominal": self.nominal}
        if self.categorical:
            data["choices"] = list(self.choices)
        else:
            data.update(low=self.low, high=self.high)
        if self.unit:
            data["unit"] = self.unit
        if self.description:
            data["description"] = self.description
        if self.bind is not None:
            data["bind"] = dict(self.bind)
        return data

    @property
    def categorical(self) -> bool:
        """True when the parameter takes one of a fixed set of named values."""
        return bool(self.choices)

    def validate(self, value: Any, *, source: str | None = None, key: str | None = None) -> Value:
        """Return `value` as the parameter's type, or raise a ConfigError naming what is allowed."""
        key = key or self.name
        if self.categorical:
            if value not in self.choices:
                raise ConfigError(
                    f"{value!r} is not an allowed value of '{self.name}' (allowed: {allowed(self.choices)})",
                    source=source,
                    key=key,
                )
            return str(value)
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise ConfigError(
                f"{value!r} is not a number; '{self.name}' takes a float in [{self.low}, {self.high}]",
                source=source,
                key=key,
            )
        number = float(value)
        if not (math.isfinite(number) and self.low <= number <= self.high):  # type: ignore[operator]
            raise ConfigError(
                f"{number} is outside the bounds of '{self.name}': [{self.low}, {self.high}] {self.unit}".rstrip(),
                source=source,
                key=key,
            )
        return number

    def clip(self, value: Value) -> Value:
        """Clip a float draw into the bounds; categorical values pass through."""
        if self.categorical:
            return value
        return float(min(max(float(value), self.low), self.high))  # type: ignore[arg-type]


def validate_values(
    params: Mapping[str, DomainParam], values: Mapping[str, Any], *, source: str | None = None, prefix: str = ""
) -> dict[str, Value]:
    """Validate a name→value mapping against the task's parameters; unknown names are errors."""
    result: dict[str, Value] = {}
    for name, value in values.items():
        if name not in params:
            raise ConfigError(
                f"unknown domain parameter '{name}' (known: {allowed(params)})", source=source, key=prefix + name
            )
        result[name] = params[name].validate(value, source=source, key=prefix + name)
    return result


def nominal_values(params: Mapping[str, DomainParam]) -> dict[str, Value]:
    """The nominal (source) domain: every parameter at its nominal value."""
    return {name: param.nominal for name, param in params.items()}


class Distribution(Protocol):
    """A randomization distribution for one parameter."""

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> Value:
        """Draw one value; `scale` narrows (< 1) or widens (> 1) the spread around the centre."""


@dataclass(frozen=True)
class Uniform:
    """Uniform on [low, high]."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> float:
        centre, half = (self.low + self.high) / 2, (self.high - self.low) / 2 * scale
        return float(rng.uniform(centre - half, centre + half))


@dataclass(frozen=True)
class Normal:
    """Gaussian with the given mean and standard deviation."""

    mean: float
    std: float

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> float:
        return float(rng.normal(self.mean, self.std * scale))


@dataclass(frozen=True)
class LogUniform:
    """Log-uniform on [low, high] (both > 0): every factor of two equally likely."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> float:
        log_low, log_high = math.log(self.low), math.log(self.high)
        centre, half = (log_low + log_high) / 2, (log_high - log_low) / 2 * scale
        return float(math.exp(rng.uniform(centre - half, centre + half)))


@dataclass(frozen=True)
class Choice:
    """One of `options`, with optional probabilities `weights` (uniform when empty)."""

    options: tuple[str, ...]
    weights: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> str:
        probabilities = np.asarray(self.weights, dtype=float) if self.weights else None
        if probabilities is not None:
            probabilities = probabilities / probabilities.sum()
        return str(self.options[int(rng.choice(len(self.options), p=probabilities))])


DISTRIBUTIONS = ("uniform", "normal", "log_uniform", "choice")


def parse_distribution(spec: Any, param: DomainParam, *, source: str | None = None) -> Distribution:
    """Build a Distribution from its YAML form, e.g. ``{uniform: [0.7, 1.3]}`` or ``{choice: [box, sphere]}``."""
    key = f"randomization.{param.name}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"expected a mapping with exactly one of {allowed(DISTRIBUTIONS)}, got {spec!r}", source=source, key=key
        )
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution '{kind}' (allowed: {allowed(DISTRIBUTIONS)})", source=source, key=key)
    if kind == "choice":
        return _parse_choice(args, param, source=source, key=key)
    if param.categorical:
        raise ConfigError(f"'{param.name}' is categorical: use 'choice'", source=source, key=key)
    if not (isinstance(args, list | tuple) and len(args) == 2 and all(_is_number(a) for a in args)):
        raise ConfigError(f"'{kind}' takes two numbers, got {args!r}", source=source, key=key)
    a, b = float(args[0]), float(args[1])
    if kind == "normal":
        if b < 0:
            raise ConfigError(f"the standard deviation must be >= 0, got {b}", source=source, key=key)
        return Normal(a, b)
    if a > b:
        raise ConfigError(f"'{kind}' needs low <= high, got [{a}, {b}]", source=source, key=key)
    if kind == "log_uniform":
        if a <= 0:
            raise ConfigError(f"'log_uniform' needs low > 0, got {a}", source=source, key=key)
        return LogUniform(a, b)
    return Uniform(a, b)


def _parse_choice(args: Any, param: DomainParam, *, source: str | None, key: str) -> Choice:
    if not param.categorical:
        raise ConfigError(f"'choice' is for categorical parameters; '{param.name}' is a float", source=source, key=key)
    if isinstance(args, Mapping):
        options, weights = tuple(args), tuple(float(w) for w in args.values())
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"choice weights must be >= 0 and not all 0, got {dict(args)}", source=source, key=key)
    elif isinstance(args, list | tuple) and args:
        options, weights = tuple(args), ()
    else:
        raise ConfigError(f"'choice' takes a list or a value→weight mapping, got {args!r}", source=source, key=key)
    for option in options:
        param.validate(option, source=source, key=key)
    return Choice(tuple(str(o) for o in options), weights)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sample_domain(
    randomization: Mapping[str, Distribution],
    params: Mapping[str, DomainParam],
    rng: np.random.Generator,
    scale: float = 1.0,
) -> dict[str, Value]:
    """Draw one randomized domain: each randomized parameter sampled (in declared order) and clipped."""
    if scale < 0:
        raise ValueError(f"the randomization scale must be >= 0, got {scale}")
    return {name: params[name].clip(dist.sample(rng, scale)) for name, dist in randomization.items()}
