"""What produced a result: the versions of sim2real and of what it runs on, for cards, reports and unit checks."""

from __future__ import annotations

import platform

import gymnasium
import numpy as np
import stable_baselines3
import torch

from sim2real.version import __version__


def versions() -> dict[str, str]:
    """Versions of what produced a result, for cards and reports."""
    return {
        "sim2real": __version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
