"""What every harness backend is and shares: the protocol, one thread per unit, one error naming the failed units.

A backend takes a picklable function, data every unit shares and named work items, and yields
``(name, fn(shared, item), node)`` in completion order, `node` saying where the unit ran. Each
unit gets one core and one torch thread: the parallelism is across units. When a unit fails,
work not yet started is cancelled (Ray interrupts running tasks too), units already finished
are still yielded, and a :class:`WorkerError` naming every failed unit is raised at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import torch
from threadpoolctl import threadpool_limits

from sim2real.errors import RunFailure

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


UNIT_MODULES = ("sim2real.experiment.unit", "torch._dynamo")
"""What a unit needs imported (~5 s here: torch 2.4 s, torch._dynamo, first used by the optimiser, 2.1 s)."""


class WorkerError(RunFailure):
    """One or more units failed in a worker: names each unit and its error."""


class Backend(Protocol):
    """Runs `fn(shared, item)` on every item and yields (name, result, node) as each one finishes."""

    def describe(self) -> dict[str, Any]:
        """How units run (backend, workers or cluster, resources per unit), for plan.json."""

    def start(self, units: int) -> None:
        """Start the workers for `units` units ahead, so their start-up overlaps the caller's preparation."""

    def run(self, fn: Callable[[S, T], R], shared: S, items: Mapping[str, T],
            notify: Callable[[str], None] | None = None) -> Iterator[tuple[str, R, str]]:
        """Yield (name, fn(shared, item), node) as units finish; `notify` hears why nothing finishes for long."""

    def close(self) -> None:
        """Release what `start` took if `run` never did (run releases it itself)."""


def one_thread() -> None:
    """One thread for torch and for every native thread pool (OpenMP, numpy's OpenBLAS).

    A pool left at one thread per core spins on the core the other unit runs on: two units in
    parallel then each ran ~12 % slower on this 2-core machine, and ~1.5 % slower with one thread.
    """
    torch.set_num_threads(1)
    threadpool_limits(1)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one thread everywhere (as in a worker), restoring the caller's settings afterwards."""
    threads = torch.get_num_threads()
    with threadpool_limits(1):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def failure(failures: list[tuple[str, BaseException]]) -> WorkerError:
    """One error naming every failed unit."""
    by_error: dict[str, list[str]] = {}
    for key, exc in failures:
        by_error.setdefault(f"{type(exc).__name__}: {exc}", []).append(key)
    lines = "; ".join(f"{', '.join(keys)}: {error}" for error, keys in by_error.items())
    return WorkerError(f"{len(failures)} unit(s) failed ({lines}); the finished units are saved, rerun to resume")
