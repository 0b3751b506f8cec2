"""sim2real: pretrain policies in PyBullet, transfer them to shifted targets, and measure the gain."""

from sim2real.catalog import TaskSpec, load
from sim2real.domain import DomainParam
from sim2real.errors import ConfigError, Sim2RealError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DomainParam", "Sim2RealError", "TaskSpec", "__version__", "load"]
