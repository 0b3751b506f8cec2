"""Harness units in a pool of processes on this machine, forked from a server that imported torch once.

See `LocalBackend`; the protocol and the one-thread rule are in `backend_base`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from sim2real.errors import Sim2RealError
from sim2real.experiment.backend_base import UNIT_MODULES, failure, one_thread, single_thread

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

LOCAL = "local"
"""The node a local unit ran on, in the harness's units.jsonl."""

WORKER_MODULES = ("__main__", *UNIT_MODULES)
"""What the fork server imports once for every worker: the caller's main module and what a unit needs."""


class LocalBackend:
    """Units in a pool of `workers` processes on this machine (one unit in process when there is nothing to share).

    Workers come from a fork server (multiprocessing's "forkserver"), a fresh process that imports
    `WORKER_MODULES` once and forks each worker from there: torch and pybullet are not safe to
    fork once initialised, and a fresh interpreter per worker ("spawn") paid those ~5 s of imports
    once per worker, on the cores the units need. A worker exits on its own when the process that
    started it dies (even by SIGKILL: the fork server exits with it), so an interrupted run leaves
    no orphans behind.
    """

    def __init__(self, workers: int | None = None) -> None:
        workers = os.cpu_count() or 1 if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise Sim2RealError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lifeline: Connection | None = None

    def describe(self) -> dict[str, Any]:
        """How units run, for plan.json: a pool of `workers` processes on this machine."""
        return {"backend": "local", "workers": self.workers}

    def start(self, units: int) -> None:
        """Start the workers in the background, so their imports overlap the caller's preparation of the run.

        Starting a worker blocks until the fork server has imported `WORKER_MODULES`, so the
        workers are started from a thread, not from the caller's.
        """
        processes = min(self.workers, units)
        if processes > 1 and self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(WORKER_MODULES))  # no effect once this process's server runs
            watched, self._lifeline = context.Pipe(duplex=False)
            pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker, initargs=(watched,))
            self._pool = pool
            threading.Thread(target=_start_workers, args=(pool, processes), daemon=True).start()

    def close(self) -> None:
        """Stop workers started ahead that no run took (the caller's preparation failed).

        Waits for them to exit (a worker still importing finishes that first, ~3 s): without the
        wait, a worker caught mid-start-up was seen still alive 30 s later.
        """
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._cut_lifeline()

    def _cut_lifeline(self) -> None:
        """Close this process's end of the workers' lifeline: any worker still running exits."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None

    def run(self, fn: Callable[[S, T], R], shared: S, items: Mapping[str, T],
            notify: Callable[[str], None] | None = None) -> Iterator[tuple[str, R, str]]:
        """Yield (name, fn(shared, item), "local") for every item, in the order they finish."""
        processes = min(self.workers, len(items))
        if processes <= 1:
            self.close()
            yield from self._in_process(fn, shared, items)
            return
        self.start(processes)
        pool, self._pool = self._pool, None
        failures: list[tuple[str, BaseException]] = []
        drained = False
        try:
            futures: dict[Future[R], str] = {pool.submit(fn, shared, item): key for key, item in items.items()}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    yield futures[future], future.result(), LOCAL
                    continue
                if not failures:
                    for other in futures:
                        other.cancel()
                failures.append((futures[future], error))
            drained = True
        finally:
            pool.shutdown(wait=drained, cancel_futures=True)
            self._cut_lifeline()
        if failures:
            raise failure(failures) from failures[0][1]

    @staticmethod
    def _in_process(fn: Callable[[S, T], R], shared: S, items: Mapping[str, T]) -> Iterator[tuple[str, R, str]]:
        """Run the items one after the other in this process, with one torch thread like a worker."""
        for key, item in items.items():
            with single_thread():
                try:
                    result = fn(shared, item)
                except Exception as exc:
                    raise failure([(key, exc)]) from exc
            yield key, result, LOCAL


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool spawn them all at once."""


def _start_workers(pool: ProcessPoolExecutor, processes: int) -> None:
    """Make the pool start its workers (a pool closed meanwhile, the caller's preparation failed, starts none)."""
    try:
        for _ in range(processes):
            pool.submit(_ready)
    except RuntimeError:
        pass


def _init_worker(lifeline: Connection) -> None:
    """Pool worker start-up: one thread everywhere, and exit when the run's process goes away."""
    one_thread()
    threading.Thread(target=_exit_with_run, args=(lifeline,), daemon=True).start()


def _exit_with_run(lifeline: Connection) -> None:
    """Wait on a pipe whose other end only the run's process holds: end of file means the run is gone.

    The worker's own parent is the fork server, which lives as long as any worker does, so
    watching the parent (as a spawned worker could) would keep both alive for ever.
    """
    with suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(1)
