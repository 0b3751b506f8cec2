"""What system identification can fit and what an experimenter declares known: checked against the task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sim2real.domain import DomainParam
from sim2real.errors import Sim2RealError, allowed
from sim2real.spec import TaskSpec


class SysIdError(Sim2RealError):
    """Rollouts or a fit request that cannot be used: names the file, the value and what is accepted."""


def fittable(spec: TaskSpec) -> list[str]:
    """The task's numeric domain parameters: the ones system identification can fit."""
    return [name for name, p in spec.params.items() if not p.choices]


def check_params(spec: TaskSpec, names: Sequence[str]) -> list[DomainParam]:
    """The float domain parameters called `names`, or an error listing the ones that can be fitted."""
    if not names:
        raise SysIdError(f"no parameter to fit; choose among {allowed(fittable(spec))}")
    unknown = [name for name in names if name not in fittable(spec)]
    if unknown:
        raise SysIdError(f"cannot fit {allowed(unknown)}: not a numeric domain parameter of {spec.name} "
                         f"(fittable: {allowed(fittable(spec))})")
    return [spec.params[name] for name in names]


def parse_known(text: str | None) -> dict[str, float]:
    """Known values written ``name=number,...`` (as on the command line) as a dict; an error naming a bad item."""
    values: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, number = item.partition("=")
        try:
            if not name.strip():
                raise ValueError(item)
            value = float(number)
        except ValueError:
            raise SysIdError(f"known values: {item.strip()!r} is not NAME=NUMBER "
                             f"(e.g. cargo_mass=8,cargo_height=0.1)") from None
        if name.strip() in values:
            raise SysIdError(f"known values: {name.strip()!r} is given twice ({(text or '').strip()!r}); give "
                             f"each parameter once")
        values[name.strip()] = value
    return values


def check_known(spec: TaskSpec, known: Mapping[str, Any], where: str) -> dict[str, float]:
    """`known` as floats, or an error naming a value that is not a numeric domain parameter or out of bounds."""
    if not isinstance(known, Mapping):
        raise SysIdError(f"{where}: 'known' must map parameter names to numbers, got {known!r}")
    checked = {}
    for name, value in known.items():
        if name not in fittable(spec):
            raise SysIdError(f"{where}: {name!r} is not a numeric domain parameter of {spec.name} "
                             f"(allowed: {allowed(fittable(spec))})")
        try:
            checked[name] = float(spec.params[name].validate(value))
        except Sim2RealError as exc:
            raise SysIdError(f"{where}: {exc}") from exc
    return checked
