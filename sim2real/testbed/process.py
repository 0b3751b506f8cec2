"""A testbed server as a process: `serve` in this one, or a child's entry point and the handle that starts and stops it.

The demo, the latency bench and the tests start servers this way (a server they can kill or
freeze); an operator runs `sim2real serve`, which builds the same :class:`TestbedServer`.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import selectors
import ssl
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from sim2real.callables import import_callable, is_registered
from sim2real.errors import ConfigError
from sim2real.testbed.admission import server_security
from sim2real.testbed.protocol import TestbedError, TestbedTimeout
from sim2real.testbed.server import EnvFactory, TestbedServer

GYM_MODULE_ID = re.compile(r"[\w.]+:[\w./-]+-v\d+")
"""gymnasium's "module:EnvName-v0": gym.make imports the module, which registers the id."""


def env_factory_from_spec(spec: str, kwargs: Mapping[str, Any] | None = None) -> EnvFactory:
    """Turn "package.module:callable" or a gymnasium id into a factory taking no arguments."""
    kwargs = dict(kwargs or {})
    if ":" in spec and not is_registered(spec) and not GYM_MODULE_ID.fullmatch(spec):
        return functools.partial(import_callable(spec, key="--env"), **kwargs)
    return functools.partial(gym.make, spec, **kwargs)


def serve(
    env_factory: EnvFactory,
    host: str = "127.0.0.1",
    port: int = 5555,
    *,
    hold_after: float = 0.5,
    on_ready: Callable[[int], None] | None = None,
    key: bytes | None = None,
    tls: ssl.SSLContext | None = None,
    insecure: bool = False,
    realtime: bool = False,
    applied_log: str | Path | None = None,
) -> None:
    """Serve env_factory() on host:port in this process until SIGINT/SIGTERM (as `sim2real serve` serves a target).

    ``realtime`` paces a simulated env at its control period (a real robot paces itself: leave it
    off); ``applied_log`` keeps every applied step on disk, so a restarted server resumes.
    """
    TestbedServer(env_factory, host, port, hold_after, key=key, tls=tls, insecure=insecure, realtime=realtime,
                  applied_log=applied_log).serve_forever(on_ready)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve an env given as a gymnasium id or "module:callable"; prints "LISTENING <port>"."""
    parser = argparse.ArgumentParser(prog="sim2real-testbed-server", description=main.__doc__)
    parser.add_argument("--env", required=True, help='gymnasium id or "package.module:callable"')
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments for the env")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5555)
    parser.add_argument("--hold-after", type=float, default=0.5)
    parser.add_argument("--key-file", help="shared key file: clients must prove they hold it")
    parser.add_argument("--tls-cert", help="PEM certificate: serve tls:// (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of the certificate")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback host without a key")
    parser.add_argument("--handshake-burst", type=int, default=20, help="failed handshakes per peer host at once")
    parser.add_argument("--handshake-rate", type=float, default=2.0, help="... refilled at this many per second")
    parser.add_argument("--realtime", action="store_true", help="step at the env's control period (see Realtime)")
    parser.add_argument("--applied-log", help="JSONL log of applied steps; a restart on it resumes (see AppliedLog)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        key, tls = server_security(args.key_file, args.tls_cert, args.tls_key)
        factory = env_factory_from_spec(args.env, json.loads(args.kwargs))
        server = TestbedServer(factory, args.host, args.port, args.hold_after, key=key, tls=tls,
                               insecure=args.insecure, handshake_burst=args.handshake_burst,
                               handshake_rate=args.handshake_rate, realtime=args.realtime,
                               applied_log=args.applied_log)
    except (TestbedError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server.serve_forever(on_ready=lambda port: print(f"LISTENING {port}", flush=True))
    return 0


class ServerProcess:
    """A testbed server in a child Python process: for tests and benches that kill or freeze it."""

    def __init__(
        self,
        env: str,
        env_kwargs: Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hold_after: float = 0.5,
        start_timeout: float = 30.0,
        key_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        handshake_burst: int = 20,
        handshake_rate: float = 2.0,
        realtime: bool = False,
        applied_log: str | Path | None = None,
    ) -> None:
        self.host = host
        self.scheme = "tls" if tls_cert else "tcp"
        code = "import sys; from sim2real.testbed.process import main; sys.exit(main(sys.argv[1:]))"
        command = [
            sys.executable, "-c", code, "--env", env, "--kwargs", json.dumps(dict(env_kwargs or {})),
            "--host", host, "--port", str(port), "--hold-after", str(hold_after),
            "--handshake-burst", str(handshake_burst), "--handshake-rate", str(handshake_rate),
        ]
        if realtime:
            command.append("--realtime")
        for flag, value in (("--key-file", key_file), ("--tls-cert", tls_cert), ("--tls-key", tls_key),
                            ("--applied-log", applied_log)):
            if value is not None:
                command += [flag, str(value)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            self.port = self._read_port(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        """Process id of the server (for signals and /proc)."""
        return self.process.pid

    @property
    def address(self) -> str:
        """The address a RemoteEnv connects to."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def _read_port(self, timeout: float) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TestbedTimeout(f"the server process did not start listening within {timeout} s")
        line = stdout.readline()
        if not line.startswith("LISTENING "):
            code = self.process.wait(timeout)
            raise TestbedError(f"the server process exited with status {code} before listening")
        return int(line.split()[1])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after timeout) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
