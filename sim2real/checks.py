"""Checks of the plain values every command takes (counts, seeds), done before any work and named in the error."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError

MAX_SEED = 2**32 - 1
"""numpy's and gymnasium's seeds are unsigned 32-bit integers."""


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_count(name: str, value: Any, minimum: int = 1, meaning: str = "") -> int:
    """`value` as an int ≥ `minimum`, or an error naming `name`, the value and what is accepted."""
    if not is_integer(value) or value < minimum:
        what = f" ({meaning})" if meaning else ""
        raise Sim2RealError(f"{name}{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed numpy and gymnasium accept: an integer from 0 to 2**32 - 1."""
    if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
        raise Sim2RealError(f"{name} must be an integer from 0 to {MAX_SEED:,}, got {seed!r}")
    return int(seed)


def check_positive(name: str, value: Any, meaning: str = "") -> float:
    """`value` as a finite float > 0, or an error naming `name`, the value and what is accepted."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer) \
            or not math.isfinite(value) or value <= 0:
        what = f" ({meaning})" if meaning else ""
        raise Sim2RealError(f"{name}{what} must be a finite number > 0, got {value!r}")
    return float(value)
