"""Where harness units run: a local process pool (the default) or a Ray cluster, results streamed back as they finish.

A backend takes a picklable function and named work items and yields ``(name, result)`` pairs in
completion order. Each unit gets one core and one torch thread: the parallelism is across units.
When a unit fails, work not yet started is cancelled (Ray interrupts running tasks too), units already
finished are still yielded, and a :class:`WorkerError` naming every failed unit is raised at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any, Protocol, TypeVar

import torch
from threadpoolctl import threadpool_limits

from sim2real.errors import Sim2RealError, allowed

T = TypeVar("T")
R = TypeVar("R")

BACKENDS = ("local", "ray")
RAY_HINT = 'pip install "sim2real[ray]" (or pip install ray)'


class WorkerError(Sim2RealError):
    """One or more units failed in a worker: names each unit and its error."""


class Backend(Protocol):
    """Runs `fn` on every item and yields (name, result) as each one finishes."""

    def start(self, units: int) -> None:
        """Start the workers for `units` units ahead, so their start-up overlaps the caller's preparation."""

    def run(self, fn: Callable[[T], R], items: Mapping[str, T]) -> Iterator[tuple[str, R]]: ...

    def close(self) -> None:
        """Release what `start` took if `run` never did (run releases it itself)."""


def _one_thread() -> None:
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


def _failure(failures: list[tuple[str, BaseException]]) -> WorkerError:
    """One error naming every failed unit."""
    by_error: dict[str, list[str]] = {}
    for key, exc in failures:
        by_error.setdefault(f"{type(exc).__name__}: {exc}", []).append(key)
    lines = "; ".join(f"{', '.join(keys)}: {error}" for error, keys in by_error.items())
    return WorkerError(f"{len(failures)} unit(s) failed ({lines}); the finished units are saved, rerun to resume")


WORKER_MODULES = ("__main__", "sim2real.evaluation.unit", "torch._dynamo")
"""What a unit needs imported (~5 s here: torch 2.4 s, torch._dynamo, first used by the optimiser, 2.1 s)."""


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

    def run(self, fn: Callable[[T], R], items: Mapping[str, T]) -> Iterator[tuple[str, R]]:
        """Yield (name, fn(item)) for every item, in the order they finish."""
        processes = min(self.workers, len(items))
        if processes <= 1:
            self.close()
            yield from self._in_process(fn, items)
            return
        self.start(processes)
        pool, self._pool = self._pool, None
        failures: list[tuple[str, BaseException]] = []
        drained = False
        try:
            futures: dict[Future[R], str] = {pool.submit(fn, item): key for key, item in items.items()}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is None:
                    yield futures[future], future.result()
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
            raise _failure(failures) from failures[0][1]

    @staticmethod
    def _in_process(fn: Callable[[T], R], items: Mapping[str, T]) -> Iterator[tuple[str, R]]:
        """Run the items one after the other in this process, with one torch thread like a worker."""
        for key, item in items.items():
            with single_thread():
                try:
                    result = fn(item)
                except Exception as exc:
                    raise _failure([(key, exc)]) from exc
            yield key, result


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
    _one_thread()
    threading.Thread(target=_exit_with_run, args=(lifeline,), daemon=True).start()


def _exit_with_run(lifeline: Connection) -> None:
    """Wait on a pipe whose other end only the run's process holds: end of file means the run is gone.

    The worker's own parent is the fork server, which lives as long as any worker does, so
    watching the parent (as a spawned worker could) would keep both alive for ever.
    """
    with suppress(EOFError, OSError):
        lifeline.recv()
    os._exit(1)


def import_ray() -> ModuleType:
    """The ray module, or an error saying how to install the optional extra."""
    try:
        import ray
    except ImportError as exc:
        raise Sim2RealError(f"the Ray backend needs Ray, an optional extra: {RAY_HINT}") from exc
    return ray


def _ray_task(fn: Callable[[T], R], item: T) -> R:
    """What a Ray task runs: the unit, with one thread everywhere (the task holds one CPU)."""
    _one_thread()
    return fn(item)


class RayBackend:
    """Units as Ray tasks of one CPU each, on a running cluster (`address`) or a local Ray started for the run.

    Every node needs sim2real (and the task's env package) installed; the work items carry
    everything else, the pretrained model included, so no shared filesystem is needed.
    """

    def __init__(self, address: str | None = None) -> None:
        self.ray = import_ray()
        self.address = address
        self._owned = False

    def start(self, units: int) -> None:
        """Connect to the cluster (or start a local Ray) now, while the caller prepares the run."""
        if not self.ray.is_initialized():
            self.ray.init(address=self.address)
            self._owned = True

    def close(self) -> None:
        """Shut down the Ray that `start` started; a Ray the caller had running is left as it was."""
        if self._owned:
            self.ray.shutdown()
            self._owned = False

    def run(self, fn: Callable[[T], R], items: Mapping[str, T]) -> Iterator[tuple[str, R]]:
        """Yield (name, fn(item)) for every item, in the order the tasks finish (ray.wait)."""
        if not items:
            return
        ray = self.ray
        self.start(len(items))
        task = ray.remote(num_cpus=1)(_ray_task)
        refs: dict[Any, str] = {task.remote(fn, item): key for key, item in items.items()}
        pending = list(refs)
        failures: list[tuple[str, BaseException]] = []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        continue
                    except Exception as exc:
                        if not failures:
                            for other in pending:
                                ray.cancel(other)
                        failures.append((refs[ref], getattr(exc, "cause", None) or exc))
                        continue
                    yield refs[ref], result
        finally:
            for ref in pending:
                ray.cancel(ref)
            self.close()
        if failures:
            raise _failure(failures) from failures[0][1]


def make_backend(name: str, workers: int | None = None, address: str | None = None) -> Backend:
    """The backend called `name`: "local" (a process pool of `workers`) or "ray" (at `address`)."""
    if name == "local":
        return LocalBackend(workers)
    if name == "ray":
        return RayBackend(address)
    raise Sim2RealError(f"unknown backend '{name}' (allowed: {allowed(BACKENDS)})")
