"""Transfer strategies for pretrained SB3 policies: what to reuse, freeze, re-initialise or anchor.

``adapt(model, env, "freeze_base")`` returns a model ready for ``learn()`` on the target env;
:data:`STRATEGIES` lists the strategies, :func:`get_strategy` builds one with its options.
"""

from sim2real.transfer.adapt import REPORT_ATTRIBUTE, TransferReport, adapt, transfer_report
from sim2real.transfer.algorithms import ALGORITHMS, AlgorithmSupport, support_for
from sim2real.transfer.errors import TransferError
from sim2real.transfer.strategies import (
    L2SP,
    STRATEGIES,
    FineTune,
    FreezeBase,
    ReinitHead,
    Residual,
    Scratch,
    Strategy,
    SysidFinetune,
    ZeroShot,
    get_strategy,
)

__all__ = [
    "ALGORITHMS",
    "L2SP",
    "REPORT_ATTRIBUTE",
    "STRATEGIES",
    "AlgorithmSupport",
    "FineTune",
    "FreezeBase",
    "ReinitHead",
    "Residual",
    "Scratch",
    "Strategy",
    "SysidFinetune",
    "TransferError",
    "TransferReport",
    "ZeroShot",
    "adapt",
    "get_strategy",
    "support_for",
    "transfer_report",
]
