"""Silence what PyBullet's C code prints on stdout (its build time on import, argv[0] on connect)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def c_stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null for the duration, so C-level printf output is dropped."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        _LIBC.fflush(None)  # C stdio buffers what it printed; drop it before fd 1 is restored
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


with c_stdout_silenced():
    import pybullet  # noqa: F401  - imported here once, quietly; later imports reuse the module
