"""sim2real: pretrain policies in PyBullet, transfer them to shifted targets, and measure the gain.

The public names are imported on first use (PEP 562), so `import sim2real` and the command line's
light commands (`--help`, `zoo list`) do not pay for torch and stable-baselines3.
"""

from __future__ import annotations

from sim2real import bullet  # noqa: F401  - first, so pybullet is imported without its stdout banner
from sim2real.errors import ConfigError, Sim2RealError
from sim2real.lazy import lazy_names
from sim2real.registration import ENV_IDS, register_envs
from sim2real.version import __version__

register_envs()

_LAZY = {
    "STRATEGIES": "sim2real.transfer",
    "adapt": "sim2real.transfer",
    "DomainParam": "sim2real.domain",
    "TaskSpec": "sim2real.spec",
    "load": "sim2real.catalog",
    "load_policy": "sim2real.zoo",
    "make_env": "sim2real.factory",
}

__all__ = [
    "ENV_IDS",
    "STRATEGIES",
    "ConfigError",
    "DomainParam",
    "Sim2RealError",
    "TaskSpec",
    "__version__",
    "adapt",
    "load",
    "load_policy",
    "make_env",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
