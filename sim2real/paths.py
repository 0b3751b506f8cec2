"""Where the shipped data lives: the source tree's top-level folder, or its copy inside the wheel."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`envs` or `policies`: the source tree's folder in a checkout, else the wheel's sim2real/_data copy."""
    in_checkout = (PACKAGE.parent / "pyproject.toml").is_file() and (PACKAGE.parent / name).is_dir()
    return PACKAGE.parent / name if in_checkout else PACKAGE / "_data" / name
