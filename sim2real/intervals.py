"""Confidence intervals for one evaluation: Wilson for a success rate, Student's t for a mean return.

The same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` and
``stats.sem(x) * stats.t.ppf(...)`` (a test compares them), from ``scipy.special`` alone:
importing ``scipy.stats`` costs ~1.6 s here, a fifth of every unit worker's and CLI command's
start-up, and every evaluation needs these two intervals and nothing else from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import ndtri, stdtrit


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for `successes` out of `n` (Newcombe 1998, no continuity correction)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes}, n={n}")
    z = float(ndtri(0.5 + 0.5 * confidence))
    p = successes / n
    denominator = 2 * (n + z**2)
    center = (2 * n * p + z**2) / denominator
    delta = z / denominator * math.sqrt(4 * n * p * (1 - p) + z**2)
    low = 0.0 if successes == 0 else center - delta
    high = 1.0 if successes == n else center + delta
    return low, high


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval for the mean of `values` (the mean itself when there is no spread)."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    n = len(array)
    spread = float(array.std(ddof=1)) if n > 1 else 0.0
    if spread == 0:
        return mean, mean
    half = float(spread / math.sqrt(n) * stdtrit(n - 1, (1 + confidence) / 2))
    return mean - half, mean + half
