"""Transfer metrics on hand-computed learning curves."""

from __future__ import annotations

import math

import pytest

from sim2real.errors import Sim2RealError
from sim2real.experiment.metrics import (
    Gain,
    ThresholdTime,
    area_under_curve,
    asymptotic_gain,
    check_curve,
    jumpstart,
    sample_efficiency_gain,
    time_to_threshold,
    transfer_ratio,
)

STEPS = [0, 10, 20]


@pytest.mark.parametrize(("steps", "values", "message"), [
    ([0, 10], [0.1], "equal lengths, got 2 and 1"),
    ([], [], "non-empty"),
    ([0, 10, 10], [0, 1, 2], r"strictly increasing, got steps\[2\] = 10 after steps\[1\] = 10"),
    ([-5, 10], [0, 1], "must be >= 0"),
    ([0, 10], [0, math.nan], "values must be finite"),
])
def test_bad_curves_are_named(steps, values, message):
    with pytest.raises(Sim2RealError, match=message):
        check_curve(steps, values)


def test_jumpstart_and_asymptotic_gain():
    strategy, scratch = [0.3, 0.6, 0.9, 0.7], [0.1, 0.2, 0.5, 0.9]
    assert jumpstart(strategy, scratch) == pytest.approx(0.2)
    assert asymptotic_gain(strategy, scratch) == pytest.approx(-0.2)
    assert asymptotic_gain(strategy, scratch, last_k=2) == pytest.approx(0.8 - 0.7)
    with pytest.raises(Sim2RealError, match=r"last_k must be between 1 and .* \(4\), got 5"):
        asymptotic_gain(strategy, scratch, last_k=5)


def test_area_under_curve_is_the_mean_level():
    assert area_under_curve(STEPS, [0, 1, 1]) == pytest.approx((5 + 10) / 20)
    assert area_under_curve([0, 10, 30], [0, 1, 0]) == pytest.approx((5 + 10) / 30)
    assert area_under_curve([0, 10], [0.4, 0.4]) == pytest.approx(0.4)
    assert area_under_curve([0], [0.7]) == pytest.approx(0.7)


def test_transfer_ratio_positive_negative_and_zero_scratch():
    assert transfer_ratio(0.75, 0.5) == pytest.approx(0.5)
    assert transfer_ratio(0.25, 0.5) == pytest.approx(-0.5)  # negative transfer
    assert transfer_ratio(0.3, 0.0) == pytest.approx(30.0)  # floor 0.01: finite, ranks first
    assert transfer_ratio(0.0, 0.0) == 0.0
    assert transfer_ratio(-50.0, -100.0) == pytest.approx(0.5)  # negative returns: |AUC_scratch|
    assert transfer_ratio(0.3, 0.0, floor=0.1) == pytest.approx(3.0)
    with pytest.raises(Sim2RealError, match="floor must be > 0, got 0"):
        transfer_ratio(0.3, 0.0, floor=0)


def test_time_to_threshold_first_crossing_ties_and_censoring():
    assert time_to_threshold(STEPS, [0.1, 0.7, 0.9], 0.5, 20) == ThresholdTime(10.0, False)
    assert time_to_threshold(STEPS, [0.1, 0.5, 0.9], 0.5, 20) == (10.0, False)  # equal counts as reached
    assert time_to_threshold(STEPS, [0.1, 0.9, 0.2], 0.5, 20) == (10.0, False)  # first, even if it drops
    assert time_to_threshold(STEPS, [0.1, 0.2, 0.4], 0.5, 30) == (30.0, True)  # censored at the budget
    assert time_to_threshold(STEPS, [0.8, 0.9, 1.0], 0.5, 20) == (0.0, False)  # zero-shot already good
    with pytest.raises(Sim2RealError, match=r"budget must be > 0 and cover the last evaluation \(step 20\)"):
        time_to_threshold(STEPS, [0, 0, 0], 0.5, 15)


@pytest.mark.parametrize(("args", "expected"), [
    ((40, False, 10, False), Gain(4.0, "exact")),
    ((20, False, 20, False), Gain(1.0, "exact")),  # tie
    ((10, False, 40, False), Gain(0.25, "exact")),  # strategy slower
    ((100, True, 100, True), Gain(1.0, "undetermined")),  # neither reached the threshold
    ((100, True, 20, False), Gain(5.0, "lower_bound")),  # only scratch censored
    ((50, False, 100, True), Gain(0.5, "upper_bound")),  # only the strategy censored
    ((40, False, 0, False), Gain(8.0, "lower_bound")),  # strategy good at step 0: 40 / (10 / 2)
    ((100, True, 0, False), Gain(20.0, "lower_bound")),
    ((0, False, 20, False), Gain(0.25, "upper_bound")),  # scratch good at step 0: 5 / 20
    ((0, False, 100, True), Gain(0.05, "upper_bound")),
    ((0, False, 0, False), Gain(1.0, "exact")),
])
def test_sample_efficiency_gain(args, expected):
    gain = sample_efficiency_gain(*args, eval_interval=10)
    assert gain.kind == expected.kind
    assert gain.value == pytest.approx(expected.value)


def test_sample_efficiency_gain_bad_input():
    with pytest.raises(Sim2RealError, match="needs eval_interval > 0, got None"):
        sample_efficiency_gain(40, False, 0, False)
    with pytest.raises(Sim2RealError, match="t_strategy must be a finite number of steps >= 0, got -1"):
        sample_efficiency_gain(40, False, -1, False)
    with pytest.raises(Sim2RealError, match="censored time is the budget"):
        sample_efficiency_gain(0, True, 10, False)
