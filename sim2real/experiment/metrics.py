"""Transfer metrics over learning curves (Taylor & Stone 2009), as pure functions of one seed's curves.

A learning curve is a pair of arrays: ``steps``, the target-environment steps at which the policy
was evaluated (strictly increasing, normally starting at 0), and ``values``, the success rate or
mean return measured there. Each strategy's curve is compared with the ``scratch`` curve of the
same seed; aggregation over seeds lives in :mod:`sim2real.experiment.stats`.

Every function returns finite numbers for finite input, so that the aggregates stay well defined:

* the transfer ratio divides by ``max(|AUC_scratch|, floor)`` rather than by ``|AUC_scratch|``;
* a run that never reaches the threshold is censored at the budget, and the sample-efficiency
  gain then says whether it is a lower bound, an upper bound or undetermined;
* a run that meets the threshold before any training (step 0) is counted as reaching it half an
  evaluation interval in, and the gain is flagged as a bound, since the true ratio is 0 or infinite.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import trapezoid

from sim2real.errors import Sim2RealError

#: Default denominator floor of the transfer ratio, in the units of the curve (one percentage
#: point of success rate), so that a scratch run that never succeeds gives a large, finite ratio.
RATIO_FLOOR = 0.01

GainKind = Literal["exact", "lower_bound", "upper_bound", "undetermined"]


class ThresholdTime(NamedTuple):
    """Target steps until a curve first reached the threshold; `censored` when it never did."""

    steps: float
    censored: bool


class Gain(NamedTuple):
    """A sample-efficiency gain and what it is: exact, a lower or upper bound, or undetermined."""

    value: float
    kind: GainKind


def _values(values: ArrayLike, name: str) -> np.ndarray:
    """`values` as a non-empty 1-D float array of finite numbers, or a clear error."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise Sim2RealError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise Sim2RealError(f"{name} must be finite, got {array.tolist()}")
    return array


def check_curve(steps: ArrayLike, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a learning curve: equal lengths, finite numbers, steps >= 0 and strictly increasing."""
    steps_ = _values(steps, "steps")
    values_ = _values(values, "values")
    if steps_.size != values_.size:
        raise Sim2RealError(f"steps and values must have equal lengths, got {steps_.size} and {values_.size}")
    if steps_[0] < 0:
        raise Sim2RealError(f"steps must be >= 0, got steps[0] = {steps_[0]:g}")
    decreasing = np.flatnonzero(np.diff(steps_) <= 0)
    if decreasing.size:
        i = int(decreasing[0]) + 1
        raise Sim2RealError(f"steps must be strictly increasing, got steps[{i}] = {steps_[i]:g} "
                            f"after steps[{i - 1}] = {steps_[i - 1]:g}")
    return steps_, values_


def jumpstart(strategy: ArrayLike, scratch: ArrayLike) -> float:
    """Initial advantage: the strategy's first evaluation minus scratch's first evaluation."""
    return float(_values(strategy, "strategy values")[0] - _values(scratch, "scratch values")[0])


def asymptotic_gain(strategy: ArrayLike, scratch: ArrayLike, last_k: int = 1) -> float:
    """Final advantage: mean of the strategy's last `last_k` evaluations minus scratch's."""
    strategy_ = _values(strategy, "strategy values")
    scratch_ = _values(scratch, "scratch values")
    shortest = min(strategy_.size, scratch_.size)
    if not 1 <= last_k <= shortest:
        raise Sim2RealError(f"last_k must be between 1 and the number of evaluations ({shortest}), "
                            f"got {last_k}")
    return float(strategy_[-last_k:].mean() - scratch_[-last_k:].mean())


def area_under_curve(steps: ArrayLike, values: ArrayLike) -> float:
    """Mean level of a curve: trapezoid area divided by the step span (the value itself for one point)."""
    steps_, values_ = check_curve(steps, values)
    if steps_.size == 1:
        return float(values_[0])
    return float(trapezoid(values_, steps_) / (steps_[-1] - steps_[0]))


def transfer_ratio(auc_strategy: float, auc_scratch: float, floor: float = RATIO_FLOOR) -> float:
    """Relative area gain (AUC_strategy - AUC_scratch) / max(|AUC_scratch|, floor).

    Dividing by ``|AUC_scratch|`` alone is infinite or wildly large when scratch never gets off the
    ground (AUC 0), and one such seed would dominate every aggregate. The floor (in the units of
    the curve) keeps the ratio finite and continuous: both areas 0 give 0, and a positive strategy
    area over a zero scratch area gives a large positive ratio that still ranks first.
    """
    if not floor > 0:
        raise Sim2RealError(f"floor must be > 0, got {floor}")
    if not (np.isfinite(auc_strategy) and np.isfinite(auc_scratch)):
        raise Sim2RealError(f"areas must be finite, got {auc_strategy} and {auc_scratch}")
    return float((auc_strategy - auc_scratch) / max(abs(auc_scratch), floor))


def time_to_threshold(steps: ArrayLike, values: ArrayLike, threshold: float, budget: float) -> ThresholdTime:
    """First step whose value is >= `threshold`; (budget, censored) when no evaluation reaches it."""
    steps_, values_ = check_curve(steps, values)
    if not budget > 0 or budget < steps_[-1]:
        raise Sim2RealError(f"budget must be > 0 and cover the last evaluation (step {steps_[-1]:g}), "
                            f"got {budget}")
    reached = np.flatnonzero(values_ >= threshold)
    if reached.size == 0:
        return ThresholdTime(float(budget), True)
    return ThresholdTime(float(steps_[reached[0]]), False)


def sample_efficiency_gain(t_scratch: float, cens_scratch: bool, t_strategy: float, cens_strategy: bool,
                           *, eval_interval: float | None = None) -> Gain:
    """How many times fewer target steps the strategy needs than scratch: t_scratch / t_strategy.

    Censored times equal the budget. Both censored: 1.0, "undetermined". Only scratch censored:
    budget / t_strategy, a "lower_bound". Only the strategy censored: t_scratch / budget, an
    "upper_bound". A time of 0 (threshold met before any training) is replaced by
    ``eval_interval / 2``, the midpoint of the first evaluation interval, since evaluations cannot
    resolve a finer time; the true ratio is then infinite or 0, so the gain is flagged as a lower
    bound (strategy at 0) or an upper bound (scratch at 0), and is exact (1.0) when both are at 0.
    """
    for name, t in (("t_scratch", t_scratch), ("t_strategy", t_strategy)):
        if not (np.isfinite(t) and t >= 0):
            raise Sim2RealError(f"{name} must be a finite number of steps >= 0, got {t}")
    if (cens_scratch and t_scratch == 0) or (cens_strategy and t_strategy == 0):
        raise Sim2RealError("a censored time is the budget and must be > 0, got 0")
    if cens_scratch and cens_strategy:
        return Gain(1.0, "undetermined")
    if t_scratch == 0 and t_strategy == 0:
        return Gain(1.0, "exact")
    if t_scratch == 0 or t_strategy == 0:
        if eval_interval is None or not (np.isfinite(eval_interval) and eval_interval > 0):
            raise Sim2RealError("a time of 0 (threshold met at step 0) needs eval_interval > 0, "
                                f"got {eval_interval}")
        half = eval_interval / 2
        if t_strategy == 0:
            return Gain(t_scratch / half, "lower_bound")
        return Gain(half / t_strategy, "upper_bound")
    value = t_scratch / t_strategy
    if cens_scratch:
        return Gain(value, "lower_bound")
    if cens_strategy:
        return Gain(value, "upper_bound")
    return Gain(value, "exact")
