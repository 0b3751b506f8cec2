"""Learning curves from a transfer run's records: checked, grouped per unit, aggregated over seeds per step.

Each record of ``results.jsonl`` is one evaluation of one unit (strategy, target, seed) at a step.
A step recorded twice (a unit rerun after a crash) keeps its last record.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError, allowed
from sim2real.experiment import metrics
from sim2real.experiment.run_files import EvaluationRecord, evaluation_records, finite
from sim2real.experiment.stats import aggregate, iqm

CURVE_METRICS = ("success", "return")
AXIS_LABELS = {"success": "success rate", "return": "mean return"}


@dataclass(frozen=True)
class Curve:
    """One unit's learning curve: evaluation steps with the success rate and mean return at each."""

    steps: np.ndarray
    success: np.ndarray
    returns: np.ndarray

    def values(self, metric: str) -> np.ndarray:
        """The curve of `metric` ("success" or "return")."""
        return self.success if metric == "success" else self.returns

    @property
    def first_interval(self) -> float | None:
        """Steps between the first two evaluations (None for a single evaluation)."""
        return float(self.steps[1] - self.steps[0]) if self.steps.size > 1 else None


def final_updates(records: Sequence[EvaluationRecord]) -> dict[tuple[str, str, int], int | None]:
    """Gradient updates each unit had made by its last evaluation (None where the records do not say)."""
    last: dict[tuple[str, str, int], tuple[float, int | None]] = {}
    for record in records:
        if record.key not in last or record.steps >= last[record.key][0]:
            last[record.key] = (record.steps, record.updates)
    return {unit: made for unit, (_, made) in last.items()}


def group_curves(records: Iterable[EvaluationRecord | Mapping[str, Any]]) -> dict[tuple[str, str, int], Curve]:
    """One curve per (strategy, target, seed), in order of first appearance; a repeated step keeps the last.

    A unit rerun after a crash appends its evaluations again, so the later record of a step wins.
    Records may be EvaluationRecords or their JSON (checked: an error names the record and the key).
    """
    points: dict[tuple[str, str, int], dict[float, tuple[float, float]]] = {}
    for index, record in enumerate(evaluation_records(records)):
        point = tuple(float(finite(record.value(metric), metric, f"record {index}")) for metric in CURVE_METRICS)
        points.setdefault(record.key, {})[float(record.steps)] = point
    curves = {}
    for unit, by_step in points.items():
        steps = np.array(sorted(by_step))
        values = np.array([by_step[step] for step in steps]).reshape(-1, 2)
        metrics.check_curve(steps, values[:, 0])
        curves[unit] = Curve(steps, values[:, 0], values[:, 1])
    return curves


def _by_step(curves: Mapping[tuple[str, str, int], Curve], strategy: str,
             metric: str) -> Iterator[tuple[float, list[tuple[str, float]]]]:
    """Each evaluation step of `strategy`'s units, with (target, value) of every unit evaluated there."""
    units = [(unit[1], curve) for unit, curve in curves.items() if unit[0] == strategy]
    for step in sorted({float(step) for _, curve in units for step in curve.steps}):
        yield step, [(target, curve.values(metric)[curve.steps == step][0])
                     for target, curve in units if (curve.steps == step).any()]


def iqm_curve(curves: Mapping[tuple[str, str, int], Curve], strategy: str,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """One strategy's curve as the IQM over its units at each evaluation step (the curve a report plots)."""
    points = [(step, iqm([value for _, value in at_step])) for step, at_step in _by_step(curves, strategy, metric)]
    return np.array([step for step, _ in points]), np.array([value for _, value in points], dtype=float)


def learning_curves(records: Iterable[EvaluationRecord | Mapping[str, Any]], metric: str, rng_seed: int = 0, *,
                    confidence: float = 0.95, n_resamples: int = 2000) -> dict[str, dict[str, list[float]]]:
    """Per strategy and evaluation step: IQM over seeds with its CI (targets as strata), for plotting."""
    if metric not in CURVE_METRICS:
        raise Sim2RealError(f"unknown metric '{metric}' (allowed: {allowed(CURVE_METRICS)})")
    curves = group_curves(records)
    result: dict[str, dict[str, list[float]]] = {}
    for name in dict.fromkeys(unit[0] for unit in curves):
        series: dict[str, list[float]] = {"steps": [], "iqm": [], "low": [], "high": []}
        for step, at_step in _by_step(curves, name, metric):
            series["steps"].append(step)
            rng = np.random.default_rng([rng_seed, zlib.crc32(f"{name}/curve/{step}".encode())])
            point = aggregate([value for _, value in at_step], strata=[target for target, _ in at_step],
                              rng=rng, confidence=confidence, n_resamples=n_resamples)
            series["iqm"].append(point["iqm"])
            series["low"].append(point["ci"][0])
            series["high"].append(point["ci"][1])
        result[name] = series
    return result
