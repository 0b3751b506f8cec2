"""Aggregates over seeds: IQM, stratified bootstrap CIs, probability of improvement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim2real.errors import Sim2RealError
from sim2real.experiment.stats import (
    aggregate,
    bootstrap_ci,
    iqm,
    negative_transfer,
    probability_of_improvement,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm(range(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm([1, 2, 3, 100]) == pytest.approx(2.5)  # the outlier is trimmed
    assert iqm([7.0]) == pytest.approx(7.0)
    assert iqm([[1, 2, 3, 4], [0, 0, 0, 8]]).tolist() == pytest.approx([2.5, 0.0])


def test_iqm_tames_infinities():
    assert iqm([1, 2, 3, math.inf]) == pytest.approx(2.5)  # trimmed quarter: unchanged
    assert iqm([-math.inf, 1, 2, 3, 4, 5, 6, math.inf]) == pytest.approx(3.5)
    assert iqm([1, 2, math.inf, math.inf]) == pytest.approx(2.0)  # replaced by the finite maximum
    assert iqm([math.inf, math.inf]) == math.inf
    with pytest.raises(Sim2RealError, match="only \\+inf and -inf"):
        iqm([math.inf, -math.inf])
    with pytest.raises(Sim2RealError, match="NaN"):
        iqm([1.0, math.nan])
    with pytest.raises(Sim2RealError, match="empty"):
        iqm([])


def test_bootstrap_ci_is_reproducible_and_contains_the_iqm():
    values = [0.1, 0.4, 0.35, 0.8, 0.5, 0.45]
    low, high = bootstrap_ci(values, rng=rng(3))
    assert low < iqm(values) < high
    assert bootstrap_ci(values, rng=rng(3)) == (low, high)
    assert bootstrap_ci(values) == bootstrap_ci(values, rng=rng(0))
    assert bootstrap_ci(values, np.mean, confidence=0.5, rng=rng(3)) != (low, high)
    bca_low, bca_high = bootstrap_ci(values, method="BCa", rng=rng(3))
    assert bca_low <= iqm(values) <= bca_high


@pytest.mark.parametrize("values", [[0.3], [0.5, 0.5, 0.5], [math.inf, math.inf]])
def test_degenerate_samples_have_a_point_interval(values):
    assert bootstrap_ci(values, rng=rng()) == (values[0], values[0])
    assert aggregate(values) == {"iqm": values[0], "ci": [values[0], values[0]]}


def test_stratified_bootstrap_resamples_within_each_stratum():
    values = [1, 1, 1, 5, 5, 5]
    # Within each target the seeds agree, so every stratified resample is the same: no uncertainty.
    assert aggregate(values, strata=list("aaabbb")) == {"iqm": 3.0, "ci": [3.0, 3.0]}
    low, high = bootstrap_ci(values, rng=rng())
    assert low < 3.0 < high
    low, high = bootstrap_ci([1, 2, 3, 10, 11, 12, 20], strata=list("aaabbbc"), rng=rng())
    assert low < iqm([1, 2, 3, 10, 11, 12, 20]) < high  # a one-seed stratum is held fixed
    with pytest.raises(Sim2RealError, match="got 2 labels for 6 values"):
        aggregate(values, strata=["a", "b"])


def test_infinite_values_do_not_break_the_aggregate():
    result = aggregate([1.0, 2.0, 3.0, 4.0, math.inf], rng=rng())
    assert result["iqm"] == pytest.approx(3.0)  # tamed to [1, 2, 3, 4, 4]: mean of 2, 3, 4
    assert all(math.isfinite(x) for x in result["ci"])


def test_probability_of_improvement_counts_ties_as_half():
    result = probability_of_improvement([3, 4, 5], [1, 2, 3], rng=rng())
    assert result["iqm"] == pytest.approx(8.5 / 9)  # 8 wins and one tie out of 9 pairs
    assert 0 <= result["ci"][0] <= result["iqm"] <= result["ci"][1] <= 1
    assert probability_of_improvement([3, 4, 5], [1, 2, 3], rng=rng()) == result
    assert probability_of_improvement([1, 1], [1, 1]) == {"iqm": 0.5, "ci": [0.5, 0.5]}
    assert probability_of_improvement([2], [1]) == {"iqm": 1.0, "ci": [1.0, 1.0]}
    assert probability_of_improvement([0, 0, 0], [1, 2, 3])["iqm"] == 0.0


def test_probability_of_improvement_averages_over_strata():
    # Target a: strategy always wins (1.0); target b: always loses (0.0).
    result = probability_of_improvement([3, 4, 0, 0], [0, 1, 5, 6], strata=(list("aabb"), list("aabb")),
                                        rng=rng())
    assert result == {"iqm": 0.5, "ci": [0.5, 0.5]}
    with pytest.raises(Sim2RealError, match="same strata"):
        probability_of_improvement([1, 2], [1, 2], strata=(["a", "a"], ["b", "b"]))


def test_negative_transfer_needs_the_whole_ci_below_zero():
    assert negative_transfer([-0.5, -0.1]) is True
    assert negative_transfer([-0.5, 0.1]) is False
    assert negative_transfer([-0.5, 0.0]) is False
    with pytest.raises(Sim2RealError, match=r"must be \[low, high\]"):
        negative_transfer([-0.5])
