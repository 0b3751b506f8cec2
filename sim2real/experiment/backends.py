"""Where harness units run: a local process pool (the default) or a Ray cluster, results streamed back as they end."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim2real.errors import Sim2RealError, allowed
from sim2real.experiment.backend_base import Backend, WorkerError
from sim2real.experiment.local_backend import LocalBackend
from sim2real.experiment.ray_backend import RayBackend

BACKENDS = ("local", "ray")

__all__ = ["BACKENDS", "Backend", "LocalBackend", "RayBackend", "WorkerError", "make_backend"]


def make_backend(name: str, workers: int | None = None, address: str | None = None,
                 runtime_env: Mapping[str, Any] | None = None) -> Backend:
    """The backend called `name`: "local" (a process pool of `workers`) or "ray" (at `address`, with `runtime_env`)."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address, runtime_env)
    raise Sim2RealError(f"unknown backend '{name}' (allowed: {allowed(BACKENDS)})")
