"""The task catalogue: load and validate task YAML files (envs/*.yaml, or a user's own) into TaskSpec.

Every error names the file, the key and what is allowed, so a typo in a YAML is found when it is
loaded, not after an hour of training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sim2real.callables import env_entry_point
from sim2real.domain import (
    DomainParam,
    parse_distribution,
    validate_values,
)
from sim2real.errors import ConfigError, allowed
from sim2real.paths import data_dir
from sim2real.spec import (
    ALGOS,
    REALITY_GAP_KEYS,
    SOURCE,
    TARGET_KINDS,
    AlgoConfig,
    RealityGap,
    Target,
    TaskSpec,
    Threshold,
    TrainSpec,
    TransferDefaults,
)

_TOP_KEYS = {"name", "id", "description", "kwargs", "params", "randomization", "targets", "train", "threshold",
             "transfer"}
_REQUIRED_TOP = ("id", "train", "threshold")
_PARAM_KEYS = {"nominal", "low", "high", "choices", "unit", "description", "bind"}
_TARGET_KEYS = {"kind", "description", "params", "reality_gap", "task"}
_TRAIN_KEYS = {"algo", "steps", "n_envs", "hyperparameters", "eval_every", "eval_episodes", "stop_at", "eval_gate",
               *ALGOS}
_ALGO_KEYS = {"steps", "n_envs", "hyperparameters"}
_TRANSFER_KEYS = {"budget", "eval_every", "episodes", "seeds", "strategies"}


def envs_dir() -> Path:
    """Where the shipped task YAMLs live: the source tree's envs/, or the copy inside the wheel."""
    root = data_dir("envs")
    if not root.is_dir():
        raise FileNotFoundError(f"no envs/ folder in the checkout or inside the installed package ({root})")
    return root


def available() -> list[str]:
    """Names of the shipped tasks (envs/*.yaml) and examples (envs/examples/*.yaml)."""
    root = envs_dir()
    return sorted(p.stem for p in root.glob("*.yaml")) + sorted(p.stem for p in root.glob("examples/*.yaml"))


def resolve(task: str | Path) -> Path:
    """Turn a catalogue name or a path into the YAML file it names."""
    candidate = Path(task)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"no such task file: {candidate}")
        return candidate
    root = envs_dir()
    for path in (root / f"{task}.yaml", root / "examples" / f"{task}.yaml"):
        if path.is_file():
            return path
    raise ConfigError(f"unknown task '{task}' (catalogue: {allowed(available())}; or give a path to a YAML file)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); "
                                f"give each key once", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(task: str | Path | TaskSpec) -> TaskSpec:
    """Load and validate a task from a catalogue name or a YAML path."""
    if isinstance(task, TaskSpec):
        return task
    if not isinstance(task, str | Path):
        raise ConfigError(f"a task is a catalogue name ({allowed(available())}), a YAML path or a TaskSpec; "
                          f"got {task!r}")
    path = resolve(task)
    source = str(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"not valid YAML: {exc.problem}{where}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from exc
    if raw is None:
        raise ConfigError("the file is empty; a task YAML needs at least id, train and threshold, and params unless "
                          "the env declares them (see envs/examples/pendulum.yaml)", source=source)
    return parse(raw, source=source, path=path)


def parse(raw: Any, *, source: str = "<task>", path: Path | None = None) -> TaskSpec:
    """Validate a task's YAML content (already parsed) into a TaskSpec."""
    _check_mapping(raw, source, None, _TOP_KEYS, _REQUIRED_TOP)
    if "params" not in raw:
        raw = _with_params(raw, _declared_params(_env_id(raw, source), source))
    params = _parse_params(raw["params"], source)
    randomization = {
        name: parse_distribution(spec, _param(params, name, source, f"randomization.{name}"), source=source)
        for name, spec in _mapping(raw.get("randomization") or {}, source, "randomization").items()
    }
    targets = {
        name: _parse_target(name, spec, params, source)
        for name, spec in _mapping(raw.get("targets") or {}, source, "targets").items()
    }
    if SOURCE in targets:
        raise ConfigError(f"'{SOURCE}' is reserved for the nominal domain", source=source, key=f"targets.{SOURCE}")
    env_id = _env_id(raw, source)
    return TaskSpec(
        name=str(raw.get("name") or (path.stem if path else "task")),
        path=path or Path(source),
        env_id=env_id,
        description=str(raw.get("description", "")),
        kwargs=dict(_mapping(raw.get("kwargs") or {}, source, "kwargs")),
        params=params,
        randomization=randomization,
        targets=targets,
        train=_parse_train(raw["train"], source),
        threshold=_parse_threshold(raw["threshold"], source),
        transfer=_parse_transfer(raw.get("transfer") or {}, source),
        raw=copy.deepcopy(raw),  # its own copy: the parsed parts are handed to SB3, which mutates some
    )


def _env_id(raw: Mapping[str, Any], source: str) -> str:
    env_id = raw["id"]
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"'id' must be a gymnasium id or 'pkg.module:Class', got {env_id!r}", source=source, key="id")
    return env_id


def _declared_params(env_id: str, source: str) -> dict[str, Any]:
    """The `params` a task leaves out, as the env declares them (its class's ``domain_params()``), in YAML form.

    The env class is then their one declaration; the task's hash covers them as if written out.
    """
    try:
        declare = getattr(env_entry_point(env_id), "domain_params", None)
    except ConfigError as exc:
        raise ConfigError(f"no 'params' given, and the env's own cannot be read: {exc}", source=source,
                          key="params") from None
    if not callable(declare):
        raise ConfigError(f"no 'params' given, and env '{env_id}' declares none (no domain_params()); declare its "
                          f"domain parameters here (see envs/examples/pendulum.yaml)", source=source, key="params")
    return {name: param.declaration() for name, param in declare().items()}


def _with_params(raw: Mapping[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `params` where a task YAML puts them (after id and kwargs): a task written from it reads as usual."""
    keys = [key for key in raw if key != "params"]
    at = max(keys.index(key) for key in ("id", "kwargs") if key in keys) + 1
    return {**{key: raw[key] for key in keys[:at]}, "params": params, **{key: raw[key] for key in keys[at:]}}


def _parse_params(raw: Any, source: str) -> dict[str, DomainParam]:
    params: dict[str, DomainParam] = {}
    for name, spec in _mapping(raw, source, "params").items():
        key = f"params.{name}"
        _check_mapping(spec, source, key, _PARAM_KEYS, ("nominal",))
        choices = spec.get("choices") or ()
        if choices and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
            raise ConfigError(f"'choices' must be a list of names, got {choices!r}", source=source, key=key)
        bind = spec.get("bind")
        if bind is not None and not isinstance(bind, Mapping):
            raise ConfigError(f"'bind' must be a mapping, got {bind!r}", source=source, key=f"{key}.bind")
        for bound in ("low", "high"):
            if bound in spec and (isinstance(spec[bound], bool) or not isinstance(spec[bound], int | float)):
                raise ConfigError(f"'{bound}' must be a number, got {spec[bound]!r}", source=source, key=key)
        try:
            params[str(name)] = DomainParam(
                name=str(name),
                nominal=spec["nominal"] if choices else _number(spec["nominal"], source, f"{key}.nominal"),
                low=None if choices else spec.get("low"),
                high=None if choices else spec.get("high"),
                choices=tuple(choices),
                unit=str(spec.get("unit", "")),
                description=str(spec.get("description", "")),
                bind=bind,
            )
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source) from exc
    if not params:
        raise ConfigError("a task needs at least one domain parameter", source=source, key="params")
    return params


def _parse_target(name: str, spec: Any, params: Mapping[str, DomainParam], source: str) -> Target:
    key = f"targets.{name}"
    _check_mapping(spec, source, key, _TARGET_KEYS, ("kind", "description"))
    if spec["kind"] not in TARGET_KINDS:
        raise ConfigError(f"kind {spec['kind']!r} is not allowed (allowed: {allowed(TARGET_KINDS)})",
                          source=source, key=f"{key}.kind")
    values = validate_values(params, _mapping(spec.get("params") or {}, source, f"{key}.params"),
                             source=source, prefix=f"{key}.params.")
    return Target(
        name=str(name),
        kind=spec["kind"],
        description=str(spec["description"]),
        params=values,
        reality_gap=_parse_reality_gap(spec.get("reality_gap") or {}, source, f"{key}.reality_gap"),
        task=dict(_mapping(spec.get("task") or {}, source, f"{key}.task")),
    )


def _parse_reality_gap(raw: Any, source: str, key: str) -> RealityGap:
    _check_mapping(raw, source, key, set(REALITY_GAP_KEYS), ())
    noise: dict[str, float | tuple[float, ...]] = {}
    for name in ("obs_noise_std", "action_noise_std"):
        value = raw.get(name, 0.0)
        if isinstance(value, list):
            values = tuple(_number(v, source, f"{key}.{name}") for v in value)
        else:
            values = (_number(value, source, f"{key}.{name}"),)
        if any(v < 0 for v in values):
            raise ConfigError(f"a noise std must be >= 0, got {value!r}", source=source, key=f"{key}.{name}")
        noise[name] = values if isinstance(value, list) else values[0]
    delay = raw.get("action_delay_steps", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ConfigError(f"'action_delay_steps' must be an integer >= 0, got {delay!r}", source=source,
                          key=f"{key}.action_delay_steps")
    return RealityGap(noise["obs_noise_std"], noise["action_noise_std"], delay)


def _parse_train(raw: Any, source: str) -> TrainSpec:
    _check_mapping(raw, source, "train", _TRAIN_KEYS, ("algo",))
    algo = raw["algo"]
    if algo not in ALGOS:
        raise ConfigError(f"unknown algorithm {algo!r} (allowed: {allowed(ALGOS)})", source=source, key="train.algo")
    configs: dict[str, AlgoConfig] = {}
    for name in ALGOS:
        section = raw.get(name)
        if section is None and name != algo:
            continue
        section = dict(section or {})
        if name == algo:
            for shared in ("steps", "n_envs", "hyperparameters"):
                if shared in raw:
                    section.setdefault(shared, raw[shared])
        _check_mapping(section, source, f"train.{name}", _ALGO_KEYS, ("steps",))
        configs[name] = AlgoConfig(
            steps=_positive_int(section["steps"], source, f"train.{name}.steps"),
            n_envs=_positive_int(section.get("n_envs", 1), source, f"train.{name}.n_envs"),
            hyperparameters=dict(_mapping(section.get("hyperparameters") or {}, source,
                                          f"train.{name}.hyperparameters")),
        )
    return TrainSpec(
        algo=algo,
        configs=configs,
        eval_every=_positive_int(raw.get("eval_every", 10_000), source, "train.eval_every"),
        eval_episodes=_positive_int(raw.get("eval_episodes", 20), source, "train.eval_episodes"),
        stop_at=None if raw.get("stop_at") is None else _parse_threshold(raw["stop_at"], source, "train.stop_at"),
        eval_gate=_rate(raw.get("eval_gate", 0.0), source, "train.eval_gate"),
    )


def _rate(value: Any, source: str, key: str) -> float:
    number = _number(value, source, key)
    if not 0 <= number <= 1:
        raise ConfigError(f"a share of episodes is in [0, 1], got {number}", source=source, key=key)
    return number


def _parse_threshold(raw: Any, source: str, key: str = "threshold") -> Threshold:
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("success", "return"):
        raise ConfigError(f"expected {{success: rate}} or {{return: value}}, got {raw!r}", source=source, key=key)
    (metric, value), = raw.items()
    number = _number(value, source, f"{key}.{metric}")
    if metric == "success" and not 0 <= number <= 1:
        raise ConfigError(f"a success threshold is a rate in [0, 1], got {number}", source=source,
                          key=f"{key}.success")
    return Threshold(metric, number)


def _parse_transfer(raw: Any, source: str) -> TransferDefaults:
    _check_mapping(raw, source, "transfer", _TRANSFER_KEYS, ())
    defaults = TransferDefaults()
    values = {
        name: _positive_int(raw[name], source, f"transfer.{name}")
        for name in ("budget", "eval_every", "episodes", "seeds")
        if name in raw
    }
    strategies = raw.get("strategies", list(defaults.strategies))
    if not (isinstance(strategies, list) and all(isinstance(s, str) for s in strategies)):
        raise ConfigError(f"'strategies' must be a list of names, got {strategies!r}", source=source,
                          key="transfer.strategies")
    result = TransferDefaults(**{**defaults.__dict__, **values, "strategies": tuple(strategies)})
    if result.eval_every > result.budget:
        raise ConfigError(f"eval_every ({result.eval_every}) exceeds the budget ({result.budget})", source=source,
                          key="transfer.eval_every")
    return result


def _mapping(raw: Any, source: str, key: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping, got {type(raw).__name__} {raw!r}", source=source, key=key)
    return raw


def _check_mapping(raw: Any, source: str, key: str | None, allowed_keys: set[str], required: tuple[str, ...]) -> None:
    where = key or "(top level)"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping, got {type(raw).__name__} {raw!r}", source=source, key=where)
    unknown = sorted(set(raw) - allowed_keys)
    if unknown:
        raise ConfigError(f"unknown key(s) {allowed(unknown)} (allowed: {allowed(sorted(allowed_keys))})",
                          source=source, key=where)
    missing = [name for name in required if name not in raw]
    if missing:
        raise ConfigError(f"missing required key(s) {allowed(missing)}", source=source, key=where)


def _param(params: Mapping[str, DomainParam], name: str, source: str, key: str) -> DomainParam:
    if name not in params:
        raise ConfigError(f"unknown domain parameter '{name}' (known: {allowed(params)})", source=source, key=key)
    return params[name]


def _number(value: Any, source: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"expected a number, got {value!r}", source=source, key=key)
    return float(value)


def _positive_int(value: Any, source: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"expected an integer > 0, got {value!r}", source=source, key=key)
    return value
