"""sim2real: pretrain policies in PyBullet, transfer them to shifted targets, and measure the gain."""

from sim2real import bullet  # noqa: F401  - first, so pybullet is imported without its stdout banner
from sim2real.catalog import TaskSpec, load
from sim2real.domain import DomainParam
from sim2real.errors import ConfigError, Sim2RealError
from sim2real.factory import make_env
from sim2real.registration import ENV_IDS, register_envs
from sim2real.transfer import STRATEGIES, adapt
from sim2real.zoo import load_policy

__version__ = "0.1.0"

register_envs()

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
