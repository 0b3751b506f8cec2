"""Harness units as Ray tasks on a cluster: connected with a one-line error, shipped once, retried, watched.

The run's shared data (plan and policy bytes) goes to the cluster once (``ray.put``) and each
task gets a reference to it; a task asks for one CPU and `UNIT_MEMORY` bytes, is retried
`MAX_RETRIES` times when its worker or node dies, and returns everything it made (records,
the trained model's bytes) to the driver, which alone writes files. While no unit finishes, a
notice every `notice_every` seconds says what the cluster has free, so a full cluster is a
visible wait, not a silent hang. Ray itself is imported only when this backend is used.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import socket
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

from sim2real.errors import Sim2RealError
from sim2real.experiment.backend_base import UNIT_MODULES, failure, one_thread

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

RAY_HINT = 'pip install "sim2real[ray]" (or pip install ray)'
MAX_RETRIES = 2
"""Reruns of a unit whose worker process or node died (a unit that raised is not rerun: it would raise again)."""
UNIT_MEMORY = 1024**3
"""Memory a unit asks Ray for (scheduling only): a driving unit's process peaked at 0.34 GB here, ~3× headroom."""
NOTICE_SECONDS = 30.0
MISSING_MODULE = re.compile(r"No module named '([^']+)'")
"""How Python says a module is missing, whether the task's own code or an env it builds needed it."""
TASK_NODE = re.compile(r"\bip=([^),\s]+)")
"""Where a failed task ran, as Ray's error text says it (the error Ray raises keeps no attribute for it)."""
CONNECT_TIMEOUT = 5.0
CLIENT_ATTEMPTS = 3
"""Connections tried when the head's Ray Client server fails to start this driver's server process.

Ray's proxier forks that process while its gRPC threads run, and it dies at start now and then
(ray-project/ray#63202; here, 1 of 11 connections with both cores busy): a fresh try starts a new one.
"""
CLIENT_SERVER_DIED = ("Starting Ray client server failed", "Proxy failed to Connect to backend")
"""How the proxier says that process died: before it served (the first) or before its channel was ready."""
TOKEN_HELP = ("the cluster's token goes in RAY_AUTH_TOKEN, or a file named by RAY_AUTH_TOKEN_PATH or at "
              "~/.ray/auth_token (print it on the head node with `ray get-auth-token`), with RAY_AUTH_MODE=token")


class RayConnectionError(Sim2RealError):
    """The Ray cluster cannot be reached or refused this driver: names the address and what to check."""


class ClientServerDied(RayConnectionError):
    """The head's Ray Client server could not start this driver's server process; another try may."""


def import_ray() -> ModuleType:
    """The ray module, or an error saying how to install the optional extra."""
    try:
        import ray
    except ImportError as exc:
        raise Sim2RealError(f"the Ray backend needs Ray, an optional extra: {RAY_HINT}") from exc
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens there (Ray itself retries for minutes)."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectionError(f"Ray address '{address}' is not HOST:PORT or ray://HOST:PORT (the head node's "
                                 f"address, as `ray start --head` printed it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise RayConnectionError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): check that "
                                 f"`ray start --head` runs there, on that port, and that this machine can reach "
                                 f"it") from None


def shipped_modules(names: Iterable[str]) -> list[str]:
    """Paths of the user's own modules among `names` ("pkg.module" or "pkg.module:attr"), to ship with the job.

    A module installed in this Python (site-packages, the standard library) is left out: every
    node is expected to have the packages; a module found anywhere else (a project folder on
    PYTHONPATH) travels with the job as Ray `py_modules`, so workers import the driver's copy.
    """
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib", "stdlib")}
    paths: list[str] = []
    for name in names:
        top = name.partition(":")[0].split(".")[0]
        found = importlib.util.find_spec(top) if top else None
        if found is None or found.origin in (None, "built-in", "frozen"):
            continue
        locations = list(found.submodule_search_locations or [])
        path = Path(locations[0] if locations else found.origin).resolve()
        if not any(path.is_relative_to(root) for root in installed) and str(path) not in paths:
            paths.append(str(path))
    return paths


@contextmanager
def _native_stderr_to(file: IO[str]) -> Iterator[None]:
    """Send what native code writes to stderr (Ray's core logs a line per retry while connecting) to `file`."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _warm_up() -> None:
    """Import what a unit needs (~5 s: torch, SB3, torch._dynamo) in a worker the units then reuse."""
    for module in UNIT_MODULES:
        importlib.import_module(module)


def _task(fn: Callable[[S, T], R], shared: S, item: T) -> tuple[R, str]:
    """What a Ray task runs: the unit with one thread everywhere (it holds one CPU), and where it ran."""
    import ray

    one_thread()
    node = ray.get_runtime_context().get_node_id()
    return fn(shared, item), f"{ray.util.get_node_ip_address()}/{node[:8]}"


class RayBackend:
    """Units as Ray tasks on a running cluster (`address`) or on a Ray started for the run.

    Every node needs sim2real and its dependencies installed (the same versions: each unit's are
    checked by the harness); `runtime_env` is passed to ``ray.init`` (py_modules, pip, env_vars...).
    """

    def __init__(self, address: str | None = None, runtime_env: Mapping[str, Any] | None = None,
                 notice_every: float = NOTICE_SECONDS) -> None:
        self.ray = import_ray()
        self.address = address
        self.runtime_env = dict(runtime_env or {})
        self.notice_every = notice_every
        self._owned = False

    def describe(self) -> dict[str, Any]:
        """How units run, for plan.json: the cluster, each unit's resources and retries, what ships with the job."""
        return {"backend": "ray", "address": self.address, "cpus_per_unit": 1, "memory_per_unit": UNIT_MEMORY,
                "max_retries": MAX_RETRIES, "runtime_env": self.runtime_env}

    def start(self, units: int) -> None:
        """Connect to the cluster (or start a local Ray) and start a worker per unit, up to the cluster's CPUs.

        The workers import what units need while the caller prepares the run, as the local pool's do.
        """
        ray = self.ray
        if ray.is_initialized():
            return
        if self.address is not None:
            check_reachable(self.address)
        for attempt in range(1, CLIENT_ATTEMPTS + 1):
            try:
                self._connect()
                break
            except ClientServerDied:
                if attempt == CLIENT_ATTEMPTS:
                    raise
        self._owned = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        warm_up = self._remote(_warm_up)
        for _ in range(min(units, cpus)):
            warm_up.remote()  # runs without anyone holding its result

    def _connect(self) -> None:
        """One ray.init; on failure Ray is shut down again (a half-made connection fails every later init)."""
        ray = self.ray
        local = {} if self.address else {"include_dashboard": False}
        with tempfile.TemporaryFile("w+") as said, _native_stderr_to(said):
            try:
                ray.init(address=self.address, runtime_env=copy.deepcopy(self.runtime_env) or None,  # Ray rewrites it
                         logging_level="ERROR", log_to_driver=False, **local)
            except Exception as exc:
                ray.shutdown()
                said.seek(0)
                error = self._connection_error(exc, said.read())
                if any(text in str(exc) for text in CLIENT_SERVER_DIED):
                    raise ClientServerDied(str(error)) from None
                raise error from None

    def _remote(self, function: Callable[..., Any]) -> Any:
        """`function` as a Ray task with a unit's resources and retries (so units reuse the workers it started)."""
        return self.ray.remote(num_cpus=1, memory=UNIT_MEMORY, max_retries=MAX_RETRIES,
                               retry_exceptions=False)(function)

    def _connection_error(self, exc: Exception, said: str) -> RayConnectionError:
        """One line for a failed ray.init, from its exception and what Ray's core printed meanwhile."""
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
        first = lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')}: {lines[-1]}"  # a server's traceback
        if not self.address:
            return RayConnectionError(f"cannot start a local Ray: {first}")
        if "Unauthenticated" in said or "InvalidAuthToken" in said or "auth" in first.lower():
            return RayConnectionError(f"the Ray cluster at {self.address} refused this driver's token: {TOKEN_HELP}")
        if self.address.startswith("ray://"):  # Ray Client reports a wrong token as a timeout, like a dead port
            return RayConnectionError(f"cannot connect to the Ray Client server at {self.address} ({first}): check "
                                      f"that the head node serves Ray Client there (`ray start --head` does, on port "
                                      f"10001), runs this driver's Ray version ({self.ray.__version__}), and that "
                                      f"this driver holds the cluster's token ({TOKEN_HELP})")
        return RayConnectionError(f"cannot connect to the Ray cluster at {self.address} ({first}): check that a Ray "
                                  f"head node listens there (`ray start --head` prints its address) and runs this "
                                  f"driver's Ray version ({self.ray.__version__})")

    def close(self) -> None:
        """Disconnect from the cluster (shutting down a Ray that `start` started); one the caller had is left."""
        if self._owned:
            self.ray.shutdown()
            self._owned = False

    def run(self, fn: Callable[[S, T], R], shared: S, items: Mapping[str, T],
            notify: Callable[[str], None] | None = None) -> Iterator[tuple[str, R, str]]:
        """Yield (name, fn(shared, item), node) for every item, in the order the tasks finish."""
        if not items:
            return
        ray = self.ray
        self.start(len(items))
        task = self._remote(_task)
        reference = ray.put(shared)
        refs: dict[Any, str] = {task.remote(fn, reference, item): key for key, item in items.items()}
        pending = list(refs)
        failures: list[tuple[str, BaseException]] = []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=self.notice_every)
                if not done and notify is not None:
                    notify(self._waiting(len(items) - len(pending), len(items)))
                for ref in done:
                    try:
                        result, node = ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        continue
                    except Exception as exc:
                        if not failures:
                            for other in pending:
                                ray.cancel(other)
                        failures.append((refs[ref], self._cause(exc)))
                        continue
                    yield refs[ref], result, node
        finally:
            for ref in pending:
                ray.cancel(ref)
            self.close()
        if failures:
            raise failure(failures) from failures[0][1]

    def _waiting(self, done: int, total: int) -> str:
        """A notice while no unit finishes: units done, CPUs and memory free, nodes able to take a unit."""
        ray = self.ray
        free, capacity = ray.available_resources(), ray.cluster_resources()
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        able = sum(1 for node in nodes
                   if node["Resources"].get("CPU", 0) >= 1 and node["Resources"].get("memory", 0) >= UNIT_MEMORY)
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray"
        line = (f"waiting on {where}: {done} of {total} units finished; {free.get('CPU', 0):g} of "
                f"{capacity.get('CPU', 0):g} CPUs free")
        if not able:
            return (f"{line}; none of its {len(nodes)} node(s) can take a unit (1 CPU and "
                    f"{UNIT_MEMORY / 1024**3:g} GiB of memory each): add one with `ray start --address`")
        return f"{line}; the units start as CPUs free up"

    def _cause(self, exc: BaseException) -> BaseException:
        """The error a failed task stands for: the unit's own exception, or what to do when the node lacked code."""
        cause = getattr(exc, "cause", None) or exc
        missing = MISSING_MODULE.search(str(cause))
        if missing:
            node = TASK_NODE.search(str(exc))
            return Sim2RealError(f"node {node.group(1) if node else '?'} cannot import '{missing.group(1)}': install "
                                 f"it there (the same version as here), or ship it with the job (--runtime-env with "
                                 f"py_modules or pip)")
        if isinstance(exc, (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError)):
            return Sim2RealError(f"its worker died {MAX_RETRIES + 1} times ({type(exc).__name__}; out of memory? "
                                 f"each unit asks for {UNIT_MEMORY / 1024**3:g} GiB)")
        return cause

