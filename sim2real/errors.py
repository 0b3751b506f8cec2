"""Exception types: bad input names the bad value and what is accepted; a failure says what to do next.

Two kinds, because a user acts on them differently: a :class:`Sim2RealError` is the input's fault
(fix the value: the CLI exits 2), a :class:`RunFailure` is not (a worker crashed, the robot was
lost: what was computed is kept, rerun to resume; the CLI exits 1).
"""

from __future__ import annotations

from collections.abc import Iterable


class Sim2RealError(Exception):
    """Base class of the errors sim2real raises; on its own, bad input."""


class RunFailure(Sim2RealError):
    """A run failed for a reason outside its input (a crashed worker, a lost robot); says what to do next."""


class ConfigError(Sim2RealError):
    """A task YAML (or a value meant for one) is malformed: names the file, the key, what is allowed."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ", ".join(part for part in (source, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


def allowed(values: Iterable[object]) -> str:
    """Format a collection of accepted values for an error message."""
    return ", ".join(repr(v) if not isinstance(v, str) else v for v in values) or "(none)"
