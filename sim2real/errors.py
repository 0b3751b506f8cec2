"""Exception types: every user-facing error names the bad value and what is accepted."""

from __future__ import annotations

from collections.abc import Iterable


class Sim2RealError(ValueError):
    """Base class of the errors sim2real raises for bad input."""


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
