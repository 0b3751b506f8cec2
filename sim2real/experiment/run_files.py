"""A run directory's files as typed records: plan.json, each results.jsonl line, report.json.

Both are written with ``to_json`` and read back with ``from_json``, which checks every field it
relies on and names the file (or record) and the key when one is wrong, so a hand-edited or
foreign file is a one-line error, not a KeyError deep in a report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError, allowed
from sim2real.spec import Threshold

RECORD_KEYS = ("strategy", "seed", "target", "steps", "success", "return")
"""What every evaluation record must carry; the rest (unit, episodes, wall time, options, ...) is optional."""


class RunFileError(Sim2RealError):
    """A run directory's file or record is not one this version can read: names it and the bad key."""


def finite(value: Any, key: str, where: str) -> float | int:
    """`value` if it is a finite number (not a bool), else an error naming `where` and `key`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise RunFileError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return value


def _measured(data: Mapping[str, Any], key: str, where: str) -> float | None:
    """A success rate or mean return: a finite number, or None where no episode completed (a robot's aborts)."""
    return None if data[key] is None else finite(data[key], key, where)


@dataclass(frozen=True)
class EvaluationRecord:
    """One evaluation of one unit (strategy, target, seed) at one step of the grid: a line of results.jsonl."""

    target: str
    strategy: str
    seed: int
    steps: int | float
    success: float | None
    mean_return: float | None
    unit: str | None = None
    episodes: int | None = None
    wall_seconds: float | None = None
    options: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What else the writer recorded, in its order: gradient updates, target steps used, robot time, ..."""

    @property
    def key(self) -> tuple[str, str, int]:
        """(strategy, target, seed): the unit this evaluation belongs to."""
        return self.strategy, self.target, self.seed

    def value(self, metric: str) -> float | None:
        """The success rate or the mean return ("success" or "return")."""
        return self.success if metric == "success" else self.mean_return

    @property
    def updates(self) -> int | None:
        """Gradient updates made by this evaluation (None where the writer did not say)."""
        return self.extra.get("updates")

    def to_json(self) -> dict[str, Any]:
        """The results.jsonl line (optional fields left out when unset)."""
        data: dict[str, Any] = {} if self.unit is None else {"unit": self.unit}
        data.update(target=self.target, strategy=self.strategy, seed=self.seed, steps=self.steps,
                    success=self.success)
        data["return"] = self.mean_return
        for name in ("episodes", "wall_seconds", "options"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: Any, index: int) -> EvaluationRecord:
        """Read back a record (the index-th of its file or list); an error naming the record and what is wrong."""
        where = f"record {index}"
        if isinstance(data, EvaluationRecord):
            return data
        if not isinstance(data, Mapping):
            raise RunFileError(f"{where} must be a mapping with keys {allowed(RECORD_KEYS)}, got {data!r}")
        missing = [key for key in RECORD_KEYS if key not in data]
        if missing:
            raise RunFileError(f"{where} lacks {allowed(missing)} (each record needs {allowed(RECORD_KEYS)})")
        strategy, target, seed = data["strategy"], data["target"], data["seed"]
        if not isinstance(strategy, str) or not isinstance(target, str):
            raise RunFileError(f"{where}: 'strategy' and 'target' must be strings, got {strategy!r}, {target!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RunFileError(f"{where}: 'seed' must be an integer, got {seed!r}")
        known = {"unit", "episodes", "wall_seconds", "options", *RECORD_KEYS}
        return cls(target=target, strategy=strategy, seed=seed, steps=finite(data["steps"], "steps", where),
                   success=_measured(data, "success", where), mean_return=_measured(data, "return", where),
                   unit=data.get("unit"), episodes=data.get("episodes"), wall_seconds=data.get("wall_seconds"),
                   options=data.get("options"), extra={k: v for k, v in data.items() if k not in known})


def evaluation_records(records: Iterable[Any]) -> list[EvaluationRecord]:
    """Records as EvaluationRecords (mappings read with :meth:`EvaluationRecord.from_json`), in order."""
    return [EvaluationRecord.from_json(record, index) for index, record in enumerate(records)]


_PLAN_FIELDS: dict[str, type] = {
    "task": str, "spec_hash": str, "policy": str, "strategies": list, "seeds": int, "budget": int,
    "eval_every": int, "episodes": int, "eval_seed": int, "steps": list, "threshold": dict, "targets": list,
    "units": list, "policy_sha256": str,
}


_KINDS = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}


@dataclass(frozen=True)
class PlanRecord:
    """plan.json: what a transfer run is (task, policy and its hash, strategies, seeds, grid, threshold, units).

    A harness run adds how this session runs its units (`execution`); a robot run, the testbed's
    address and the action-change limit (`testbed`, `max_delta`).
    """

    task: str
    spec_hash: str
    policy: str
    strategies: tuple[Mapping[str, Any], ...]
    seeds: int
    budget: int
    eval_every: int
    episodes: int
    eval_seed: int
    steps: tuple[int, ...]
    threshold: Threshold
    targets: tuple[str, ...]
    units: tuple[str, ...]
    policy_sha256: str
    execution: Mapping[str, Any] | None = None
    testbed: str | None = None
    max_delta: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The plan.json content."""
        data: dict[str, Any] = {
            "task": self.task, "spec_hash": self.spec_hash, "policy": self.policy,
            "strategies": [dict(strategy) for strategy in self.strategies], "seeds": self.seeds,
            "budget": self.budget, "eval_every": self.eval_every, "episodes": self.episodes,
            "eval_seed": self.eval_seed, "steps": list(self.steps),
            "threshold": {"metric": self.threshold.metric, "value": self.threshold.value},
        }
        if self.testbed is not None:
            data["testbed"] = self.testbed
        data["targets"] = list(self.targets)
        if self.testbed is not None:
            data["max_delta"] = self.max_delta
        data.update(units=list(self.units), policy_sha256=self.policy_sha256)
        if self.execution is not None:
            data["execution"] = dict(self.execution)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> PlanRecord:
        """Read back plan.json content; an error naming `where` and the first key missing or of the wrong type."""
        if not isinstance(data, Mapping):
            raise RunFileError(f"{where} is not a transfer plan (a JSON object with {allowed(_PLAN_FIELDS)})")
        for key, kind in _PLAN_FIELDS.items():
            if key not in data:
                raise RunFileError(f"{where} lacks '{key}'; a transfer plan needs it as {_KINDS[kind]}")
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise RunFileError(f"{where}: '{key}' is {value!r}; a transfer plan needs it as {_KINDS[kind]}")
        threshold = data["threshold"]
        if threshold.get("metric") not in ("success", "return") or not isinstance(threshold.get("value"), int | float):
            raise RunFileError(f"{where}: 'threshold' is {threshold!r}; accepted: {{metric: success|return, "
                               f"value: a number}}")
        return cls(task=data["task"], spec_hash=data["spec_hash"], policy=data["policy"],
                   strategies=tuple(data["strategies"]), seeds=data["seeds"], budget=data["budget"],
                   eval_every=data["eval_every"], episodes=data["episodes"], eval_seed=data["eval_seed"],
                   steps=tuple(data["steps"]), threshold=Threshold(threshold["metric"], threshold["value"]),
                   targets=tuple(data["targets"]), units=tuple(data["units"]), policy_sha256=data["policy_sha256"],
                   execution=data.get("execution"), testbed=data.get("testbed"), max_delta=data.get("max_delta"))


@dataclass(frozen=True)
class ReportRecord:
    """report.json: the numbers ``summarize`` made (per strategy and per seed, against scratch) and the run's settings.

    The per-strategy entries stay the mappings ``summarize`` builds (aggregates with IQM and CI);
    what readers rely on is checked when the file is read.
    """

    summary: Mapping[str, Any]
    settings: Mapping[str, Any]

    @property
    def metric(self) -> str:
        """The threshold's metric every gain is measured in: "success" or "return"."""
        return self.summary["metric"]

    @property
    def strategies(self) -> Mapping[str, Mapping[str, Any]]:
        """Each strategy's aggregates, in the run's order."""
        return self.summary["strategies"]

    def to_json(self) -> dict[str, Any]:
        """The report.json content."""
        return {**self.summary, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ReportRecord:
        """Read back report.json content; an error naming `where` and what is missing."""
        if not isinstance(data, Mapping) or not isinstance(data.get("settings"), Mapping):
            raise RunFileError(f"{where} is not a transfer report (a JSON object with metric, strategies, settings)")
        if data.get("metric") not in ("success", "return"):
            raise RunFileError(f"{where}: 'metric' is {data.get('metric')!r}; accepted: success, return")
        strategies = data.get("strategies")
        if not isinstance(strategies, Mapping) or not all(isinstance(entry, Mapping) and isinstance(
                entry.get("final"), Mapping) for entry in strategies.values()):
            raise RunFileError(f"{where}: 'strategies' must map each strategy to its aggregates (with 'final')")
        return cls({key: value for key, value in data.items() if key != "settings"}, dict(data["settings"]))


def read_report(path: Path) -> ReportRecord:
    """The report.json at `path`, checked."""
    return ReportRecord.from_json(read_json(path), str(path))


def read_json(path: Path, advice: str = "it is not a run this version can read") -> Any:
    """A run directory's JSON file, or a one-line error naming it and `advice`."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path} is not valid JSON ({exc}); {advice}") from None


def read_plan(path: Path) -> PlanRecord:
    """The plan.json at `path`, checked."""
    return PlanRecord.from_json(read_json(path), str(path))
