"""The evaluation intervals give scipy.stats's numbers, without importing scipy.stats where they are used."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from sim2real.intervals import mean_interval, wilson_interval


@pytest.mark.parametrize("n", [1, 2, 5, 20, 100])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_equals_scipy_binomtest(n: int, confidence: float) -> None:
    for successes in range(n + 1):
        expected = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
        assert wilson_interval(successes, n, confidence) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_interval_keeps_the_ends_exact_and_refuses_a_count_out_of_range() -> None:
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes=11, n=10"):
        wilson_interval(11, 10)


def test_mean_interval_equals_scipy_t_interval() -> None:
    rng = np.random.default_rng(7)
    for n in (2, 3, 10, 100):
        values = rng.normal(3.0, 2.0, n)
        half = stats.sem(values) * stats.t.ppf(0.975, n - 1)
        assert mean_interval(values) == pytest.approx((values.mean() - half, values.mean() + half), rel=1e-12)
    assert mean_interval([4.0]) == (4.0, 4.0) and mean_interval([2.0, 2.0]) == (2.0, 2.0)


def test_a_unit_worker_does_not_import_scipy_stats() -> None:
    """scipy.stats costs ~1.6 s of every worker's start-up; the report needs it, a unit does not."""
    code = "import sys, sim2real.experiment.unit; print('scipy.stats' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
