"""The error transfer raises for a bad strategy, bad options, or a model it cannot adapt."""

from __future__ import annotations

from sim2real.errors import Sim2RealError


class TransferError(Sim2RealError):
    """A transfer strategy, one of its options, or the model it is applied to cannot be used as asked."""
