"""Silence what PyBullet's C code prints (its build-time banner on import, argv[0] on connect)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def c_output_silenced() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null for the duration, so C-level printf output is dropped."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        _LIBC.fflush(None)  # C stdio buffers what it printed; drop it before the descriptors are restored
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


with c_output_silenced():
    import pybullet  # noqa: F401  - imported here once, quietly; later imports reuse the module
