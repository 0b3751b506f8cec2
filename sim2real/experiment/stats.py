"""Aggregates over seeds: interquartile mean, stratified bootstrap CIs, probability of improvement.

Following Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"), a metric
measured on a few seeds is summarised by its interquartile mean (IQM) with a 95% bootstrap
confidence interval. With several targets (strata), seeds are resampled within each target, so
every resample keeps the design of the experiment. The resampling is ``scipy.stats.bootstrap``,
driven by a seeded numpy Generator: the same seed gives the same interval.

Degenerate samples (one value, or all values equal) have the interval [x, x], without calling the
bootstrap (which would warn or fail). Infinite values are tamed before aggregating: +inf and -inf
are replaced by the largest and smallest finite value of the sample. IQM trims the top and bottom
quarters by rank, so this leaves the IQM unchanged whenever the infinities fall in the trimmed
quarters, and otherwise gives a finite value that understates their size (a bound, never a NaN).
A sample of only infinities of one sign aggregates to that infinity; NaN is always an error.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, TypedDict

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from sim2real.errors import Sim2RealError

Method = Literal["percentile", "basic", "BCa"]
Statistic = Callable[..., Any]


class Aggregate(TypedDict):
    """A point estimate with its confidence interval, as report.json stores every metric."""

    iqm: float
    ci: list[float]


def _tame(values: np.ndarray) -> np.ndarray:
    """A 1-D sample with ±inf replaced by its finite extremes; NaN, or mixed infinities only, refused."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    if np.isnan(values).any():
        raise Sim2RealError(f"cannot aggregate NaN values: {values.tolist()}")
    if finite.any():
        return np.clip(values, values[finite].min(), values[finite].max())
    if np.unique(values).size > 1:
        raise Sim2RealError(f"cannot aggregate a sample of only +inf and -inf: {values.tolist()}")
    return values


def _sample(values: ArrayLike, name: str = "values") -> np.ndarray:
    """`values` as a non-empty, tamed 1-D float array, or a clear error."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise Sim2RealError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {array.shape}")
    return _tame(array)


def iqm(values: ArrayLike, axis: int = -1) -> Any:
    """Interquartile mean along `axis`: the mean of the middle 50%, robust to a few outlying seeds."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise Sim2RealError("cannot take the IQM of an empty sample")
    if not np.isfinite(array).all():
        array = np.apply_along_axis(_tame, axis, array)
    return stats.trim_mean(array, 0.25, axis=axis)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    """The given Generator, or a fresh one with seed 0, so that a CI is reproducible by default."""
    return np.random.default_rng(0) if rng is None else rng


def _bootstrap(samples: Sequence[np.ndarray], statistic: Statistic, point: float, *, confidence: float,
               n_resamples: int, rng: np.random.Generator, method: Method) -> tuple[float, float]:
    """CI of `statistic(list_of_samples, axis=-1)`, resampling each sample independently (strata).

    Samples that resampling cannot change (one value, or all equal) are held fixed; when no sample
    can change, the interval is [point, point].
    """
    if not 0 < confidence < 1:
        raise Sim2RealError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise Sim2RealError(f"n_resamples must be >= 1, got {n_resamples}")
    varying = [i for i, sample in enumerate(samples) if (sample != sample[0]).any()]
    if not varying:
        return point, point

    def resampled_statistic(*resampled: np.ndarray, axis: int = -1) -> Any:
        batch = np.broadcast_shapes(*(values.shape[:-1] for values in resampled))
        full = [np.broadcast_to(sample, (*batch, sample.size)) for sample in samples]
        for i, values in zip(varying, resampled, strict=True):
            full[i] = np.broadcast_to(values, (*batch, values.shape[-1]))
        return statistic(full, axis=axis)

    result = stats.bootstrap(tuple(samples[i] for i in varying), resampled_statistic, n_resamples=n_resamples,
                             vectorized=True, axis=-1, confidence_level=confidence, method=method, rng=rng)
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def _strata(values: np.ndarray, strata: Sequence[Hashable] | None) -> list[np.ndarray]:
    """`values` split by stratum label, in order of first appearance (one stratum when None)."""
    if strata is None:
        return [values]
    labels = list(strata)
    if len(labels) != values.size:
        raise Sim2RealError(f"strata must label every value: got {len(labels)} labels for "
                            f"{values.size} values")
    order = list(dict.fromkeys(labels))
    return [values[[label == stratum for label in labels]] for stratum in order]


def bootstrap_ci(values: ArrayLike, statistic: Statistic = iqm, confidence: float = 0.95,
                 n_resamples: int = 2000, rng: np.random.Generator | None = None, *,
                 strata: Sequence[Hashable] | None = None,
                 method: Method = "percentile") -> tuple[float, float]:
    """Bootstrap confidence interval of `statistic` over seeds, resampled within each stratum.

    `statistic(values, axis=-1)` reduces along `axis` (like ``np.mean`` or :func:`iqm`). With
    `strata` (one label per value, e.g. the target), seeds are resampled within their stratum
    and the statistic is taken over the pooled resample. `rng` defaults to a Generator seeded 0.
    """
    sample = _sample(values)
    groups = _strata(sample, strata)
    point = float(statistic(sample, axis=-1))

    def pooled(full: list[np.ndarray], axis: int = -1) -> Any:
        return statistic(np.concatenate(full, axis=axis), axis=axis)

    return _bootstrap(groups, pooled, point, confidence=confidence, n_resamples=n_resamples, rng=_rng(rng),
                      method=method)


def aggregate(values: ArrayLike, *, strata: Sequence[Hashable] | None = None,
              rng: np.random.Generator | None = None, confidence: float = 0.95,
              n_resamples: int = 2000) -> Aggregate:
    """IQM of per-seed values with its stratified-bootstrap CI, as ``{"iqm": x, "ci": [lo, hi]}``."""
    sample = _sample(values)
    low, high = bootstrap_ci(sample, iqm, confidence, n_resamples, rng, strata=strata)
    return {"iqm": float(iqm(sample)), "ci": [low, high]}


def _improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    """P(X > Y) + P(X = Y) / 2 from the Mann-Whitney U statistic of x (vectorised along `axis`)."""
    u = stats.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic
    return u / (x.shape[axis] * y.shape[axis])


def probability_of_improvement(strategy_values: ArrayLike, scratch_values: ArrayLike, *,
                               strata: tuple[Sequence[Hashable], Sequence[Hashable]] | None = None,
                               confidence: float = 0.95, n_resamples: int = 2000,
                               rng: np.random.Generator | None = None) -> Aggregate:
    """P(strategy run > scratch run) + ½ P(tie), averaged over strata, with a bootstrap CI.

    Runs are compared unpaired, every strategy seed against every scratch seed of the same stratum.
    `strata` gives the labels of the strategy values and of the scratch values; each stratum needs
    both. Returned as ``{"iqm": p, "ci": [lo, hi]}`` for the report's uniform schema (p is a
    probability, not an IQM).
    """
    x = _sample(strategy_values, "strategy_values")
    y = _sample(scratch_values, "scratch_values")
    x_groups = _strata(x, None if strata is None else strata[0])
    y_groups = _strata(y, None if strata is None else strata[1])
    if strata is not None:
        x_labels, y_labels = list(dict.fromkeys(strata[0])), list(dict.fromkeys(strata[1]))
        if set(x_labels) != set(y_labels):
            raise Sim2RealError(f"strategy and scratch must cover the same strata, "
                                f"got {x_labels} and {y_labels}")
        y_groups = [y_groups[y_labels.index(label)] for label in x_labels]
    samples = [group for pair in zip(x_groups, y_groups, strict=True) for group in pair]

    def mean_improvement(full: list[np.ndarray], axis: int = -1) -> Any:
        pairs = zip(full[::2], full[1::2], strict=True)
        return np.mean([_improvement(a, b, axis) for a, b in pairs], axis=0)

    point = float(mean_improvement(samples))
    low, high = _bootstrap(samples, mean_improvement, point, confidence=confidence, n_resamples=n_resamples,
                           rng=_rng(rng), method="percentile")
    return {"iqm": point, "ci": [low, high]}


def negative_transfer(ratio_ci: Sequence[float]) -> bool:
    """True when the transfer ratio's CI lies wholly below 0: the strategy is reliably worse than scratch."""
    if len(ratio_ci) != 2:
        raise Sim2RealError(f"ratio_ci must be [low, high], got {list(ratio_ci)}")
    return bool(ratio_ci[1] < 0)
