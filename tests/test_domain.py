"""Domain parameters and randomization distributions: bounds, distributions (KS tests), seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim2real.domain import (
    Choice,
    DomainParam,
    LogUniform,
    Normal,
    Uniform,
    parse_distribution,
    sample_domain,
    validate_values,
)
from sim2real.errors import ConfigError

N = 5000
WIDE = DomainParam("x", 1.0, -100.0, 100.0)
SHAPE = DomainParam("shape", "box", choices=("box", "cylinder", "sphere"))


def draws(dist, param=WIDE, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    params = {param.name: param}
    return np.array([sample_domain({param.name: dist}, params, rng, scale)[param.name] for _ in range(N)])


def test_uniform_matches_its_distribution():
    samples = draws(Uniform(0.5, 2.0))
    assert stats.kstest(samples, stats.uniform(0.5, 1.5).cdf).pvalue > 0.01


def test_normal_matches_its_distribution():
    samples = draws(Normal(1.0, 0.2))
    assert stats.kstest(samples, stats.norm(1.0, 0.2).cdf).pvalue > 0.01


def test_log_uniform_is_uniform_in_log_space():
    samples = draws(LogUniform(0.05, 0.5), DomainParam("m", 0.1, 0.01, 1.0))
    assert stats.kstest(np.log(samples), stats.uniform(math.log(0.05), math.log(10)).cdf).pvalue > 0.01


def test_choice_frequencies_follow_the_weights():
    samples = draws(Choice(("box", "sphere"), (3.0, 1.0)), SHAPE)
    counts = [np.sum(samples == "box"), np.sum(samples == "sphere")]
    assert stats.chisquare(counts, [0.75 * N, 0.25 * N]).pvalue > 0.01


@pytest.mark.parametrize("dist", [Uniform(-5, 5), Normal(0.0, 3.0), LogUniform(0.01, 10.0)])
def test_samples_stay_within_the_parameter_bounds(dist):
    param = DomainParam("p", 0.5, 0.1, 1.0)
    samples = draws(dist, param)
    assert samples.min() >= 0.1 and samples.max() <= 1.0


def test_same_seed_same_sequence_other_seed_other_sequence():
    assert np.array_equal(draws(Uniform(0, 1), seed=7), draws(Uniform(0, 1), seed=7))
    assert not np.array_equal(draws(Uniform(0, 1), seed=7), draws(Uniform(0, 1), seed=8))


def test_scale_narrows_and_widens_around_the_centre():
    narrow, wide = draws(Uniform(0.0, 2.0), scale=0.5), draws(Uniform(0.0, 2.0), scale=1.5)
    assert narrow.min() >= 0.5 and narrow.max() <= 1.5
    assert wide.min() < 0.0 and wide.max() > 2.0
    assert stats.kstest(wide, stats.uniform(-0.5, 3.0).cdf).pvalue > 0.01


def test_zero_scale_is_the_centre():
    assert set(draws(Uniform(0.0, 2.0), scale=0.0)) == {1.0}


@pytest.mark.parametrize(
    ("spec", "param", "message"),
    [
        ({"gaussian": [0, 1]}, WIDE, "unknown distribution 'gaussian'"),
        ({"uniform": [2, 1]}, WIDE, "low <= high"),
        ({"uniform": [1]}, WIDE, "takes two numbers"),
        ({"normal": [0, -1]}, WIDE, "standard deviation"),
        ({"log_uniform": [0, 1]}, WIDE, "low > 0"),
        ({"choice": ["box"]}, WIDE, "categorical"),
        ({"uniform": [0, 1]}, SHAPE, "use 'choice'"),
        ({"choice": ["box", "torus"]}, SHAPE, "'torus' is not an allowed value"),
        ([0, 1], WIDE, "exactly one of"),
    ],
)
def test_bad_distributions_are_named(spec, param, message):
    with pytest.raises(ConfigError, match=message):
        parse_distribution(spec, param, source="task.yaml")


def test_values_are_validated_against_bounds_and_names():
    params = {"x": DomainParam("x", 1.0, 0.0, 2.0, unit="kg"), "shape": SHAPE}
    assert validate_values(params, {"x": 1, "shape": "sphere"}) == {"x": 1.0, "shape": "sphere"}
    with pytest.raises(ConfigError, match=r"3.0 is outside the bounds of 'x': \[0.0, 2.0\] kg"):
        validate_values(params, {"x": 3.0})
    with pytest.raises(ConfigError, match="unknown domain parameter 'y' .known: x, shape"):
        validate_values(params, {"y": 1.0})
    with pytest.raises(ConfigError, match="is not a number"):
        validate_values(params, {"x": "heavy"})


def test_a_param_with_a_nominal_outside_its_bounds_is_refused():
    with pytest.raises(ConfigError, match="outside the bounds"):
        DomainParam("x", 5.0, 0.0, 1.0)
