"""Testbed server: serve any gymnasium env (a robot driver or a sim stand-in) over TCP.

Guarantees, in the order a robot operator cares about them:

* Exactly-once steps. STEP carries (episode, seq); the server executes each pair at most once and
  answers a resend of the last pair with the cached reply. The cache lives on the server, not on a
  connection, so a client whose connection reset mid-step reconnects (same session token), resends,
  and gets the reply of the action that was already applied.
* Safe hold. When the client owning the episode is silent (no frame at all, heartbeats included)
  for more than ``hold_after`` seconds mid-episode, or says CLOSE mid-episode, the server calls
  ``env.unwrapped.hold()`` if the env defines one (a driver's "stop and hold position"). An env
  without ``hold()`` is left as it is; the hold is only logged and counted in ``stats["holds"]``,
  because the server cannot know what "safe" means for an arbitrary env.
* Bounded everything. Frames are capped, incomplete frames and idle connections time out, and any
  malformed input gets a typed ERROR and a closed connection, never a crashed server.
* No stranger drives the env. With a key, a client must answer a fresh challenge (HMAC-SHA256, see
  ``auth``) before any RESET or STEP, and every later frame is tagged; without a key the server only
  listens on loopback unless told ``insecure``. Handshakes per peer host are rate-limited, unfinished
  handshakes time out, and every refusal is logged with the peer and the reason. TLS wraps it all
  when the server has a certificate.

This module owns connections and who may speak; what happens to the env is ``executor``'s.
Every env call (reset, step, hold) runs on the event-loop thread, so they never overlap. The flip
side: an env.step() that blocks forever blocks the server too; the client then sees a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from sim2real.testbed.admission import HandshakeLimit, check_exposure
from sim2real.testbed.auth import (
    new_nonce,
    proof_is_valid,
    session_tags,
)
from sim2real.testbed.connection import CHALLENGED, NEW, READY, Connection
from sim2real.testbed.encoding import decode_value, encode_space
from sim2real.testbed.executor import EpisodeExecutor, Refusal
from sim2real.testbed.protocol import (
    AUTH,
    CHALLENGE,
    CLOSE,
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO,
    MAX_FRAME_BYTES,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    RESET,
    STEP,
    WELCOME,
    Code,
    HandshakeError,
    ProtocolError,
    TestbedError,
    TestbedTimeout,
    check_version,
    error_message,
    pack_body,
    parse_version,
)
from sim2real.testbed.realtime import Realtime

logger = logging.getLogger(__name__)

EnvFactory = Callable[[], gym.Env]
_HEARTBEAT_OK_BODY = pack_body({"type": HEARTBEAT_OK})
_EXPECTED = {NEW: (HELLO, "the first message must be hello"),
             CHALLENGED: (AUTH, "the answer to the challenge must be auth")}


class TestbedServer:
    """Serve one gymnasium env to one client at a time, with exactly-once steps and a safe hold."""

    __test__ = False  # not a pytest test class, even when imported into a test module

    def __init__(
        self,
        env_factory: EnvFactory,
        host: str = "127.0.0.1",
        port: int = 0,
        hold_after: float = 0.5,
        *,
        idle_timeout: float = 10.0,
        frame_timeout: float = 2.0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        key: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        insecure: bool = False,
        handshake_timeout: float = 5.0,
        handshake_burst: int = 20,
        handshake_rate: float = 2.0,
        max_pending: int = 64,
        realtime: bool = False,
        applied_log: str | Path | None = None,
    ) -> None:
        for name, value in (("hold_after", hold_after), ("idle_timeout", idle_timeout),
                            ("frame_timeout", frame_timeout), ("handshake_timeout", handshake_timeout),
                            ("handshake_rate", handshake_rate)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise TestbedError(f"{name}={value!r}; accepted: a finite number of seconds > 0")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise TestbedError(f"port {port!r} is not accepted; accepted: 0-65535 (0: any free port)")
        for name, count in (("handshake_burst", handshake_burst), ("max_pending", max_pending)):
            if not (isinstance(count, int) and count >= 1):
                raise TestbedError(f"{name}={count!r}; accepted: an int >= 1")
        check_exposure(host, key, insecure)
        self.host = host
        self.realtime = bool(realtime)
        self.applied_log_path = None if applied_log is None else Path(applied_log)
        self._key = key
        self.tls = tls
        self.handshake_timeout = float(handshake_timeout)
        self.handshake_burst = handshake_burst
        self.handshake_rate = float(handshake_rate)
        self.max_pending = max_pending
        self._handshakes = HandshakeLimit(handshake_burst, float(handshake_rate))
        self.requested_port = port
        self.hold_after = float(hold_after)
        self.idle_timeout = float(idle_timeout)
        self.frame_timeout = float(frame_timeout)
        self.max_frame_bytes = max_frame_bytes
        self._env_factory = env_factory
        self._executor: EpisodeExecutor | None = None
        self._welcome: dict[str, Any] = {}
        self._port: int | None = None
        self._connections: set[Connection] = set()
        self._active: Connection | None = None
        self._counts = {"connections": 0, "rejected": 0, "refused": 0}
        self._errors = dict.fromkeys(Code.ALL, 0)
        self._tick_every = min(0.05, self.hold_after / 5)
        self._handlers = {
            HELLO: self._on_hello,
            AUTH: self._on_auth,
            RESET: self._on_reset,
            STEP: self._on_step,
            HEARTBEAT: self._on_heartbeat,
            CLOSE: self._on_close,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def env(self) -> gym.Env:
        """The served env (created by the factory when the server starts)."""
        if self._executor is None:
            raise TestbedError("the server has not started; its env does not exist yet")
        return self._executor.env

    @property
    def _live(self) -> EpisodeExecutor:
        """The env's side of a running server (handlers and the watchdog run only while it exists)."""
        assert self._executor is not None, "the server has not started"
        return self._executor

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port=0)."""
        if self._port is None:
            raise TestbedError("the server is not listening yet")
        return self._port

    @property
    def address(self) -> str:
        """The address a RemoteEnv connects to, e.g. "tcp://127.0.0.1:5555" (or tls://...)."""
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: executed/replayed steps, holds, connections, rejected (refused: before the handshake ended)."""
        executor = self._executor
        counts = dict.fromkeys(("executed", "replayed", "holds"), 0) if executor is None else executor.counts
        errors = dict(self._errors)
        errors[Code.ENV_ERROR] += 0 if executor is None else executor.env_errors
        return {**counts, **self._counts, "episodes": 0 if executor is None else executor.episodes, "errors": errors}

    def serve_forever(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Run in the calling thread until SIGINT/SIGTERM (main thread) or stop()."""
        asyncio.run(self._serve(on_ready))

    def start_in_thread(self, timeout: float = 10.0) -> int:
        """Run the server in a daemon thread; return the bound port once it listens."""
        if self._thread is not None:
            raise TestbedError("this server is already running; create another TestbedServer")
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._serve(lambda _port: ready.set()))
            except BaseException as exc:
                self._failure = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="testbed-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TestbedTimeout(f"the server did not start listening within {timeout} s")
        if self._failure is not None:
            raise TestbedError(f"the server failed to start: {self._failure}") from self._failure
        return self.port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a server started with start_in_thread(): close connections, close the env."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TestbedTimeout(f"the server thread did not stop within {timeout} s")

    async def _serve(self, on_ready: Callable[[int], None] | None) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stopping = loop, asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stopping.set)
        env = self._env_factory()
        listener = None
        try:
            if self.realtime:
                env = Realtime(env)
            self._executor = EpisodeExecutor(env, self.max_frame_bytes, self.applied_log_path)
            self._welcome = {
                "type": WELCOME,
                "version": PROTOCOL_VERSION,
                "observation_space": encode_space(env.observation_space),
                "action_space": encode_space(env.action_space),
                "hold_after": self.hold_after,
                "control_hz": env.control_hz if isinstance(env, Realtime) else None,
            }
            try:
                listener = await loop.create_server(lambda: Connection(self), self.host, self.requested_port)
            except OSError as exc:
                raise TestbedError(f"cannot listen on {self.host}:{self.requested_port}: {exc.strerror}") from None
            self._port = listener.sockets[0].getsockname()[1]
            logger.info("testbed server listening on %s serving %s (%s)", self.address, env,
                        "key required" if self._key else "NO KEY: anyone who reaches the port can drive the env")
            self._tick_handle = loop.call_later(self._tick_every, self._tick)
            if on_ready is not None:
                on_ready(self._port)
            await self._stopping.wait()
        finally:
            if self._tick_handle is not None:
                self._tick_handle.cancel()
            if listener is not None:
                listener.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.abort()
            if listener is not None:
                await listener.wait_closed()
            env.close()
            if self._executor is not None:
                self._executor.close()
            logger.info("testbed server stopped; stats %s", self.stats)

    def _tick(self) -> None:
        """Periodic watchdog: frame and idle timeouts, lingering closes, the safe hold."""
        assert self._loop is not None
        try:
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.closed_at is not None:
                    if now - conn.closed_at > self.frame_timeout and conn.transport is not None:
                        conn.transport.abort()
                elif conn.state != READY and now - conn.opened_at > self.handshake_timeout:
                    conn.fail(Code.TIMEOUT, f"handshake not completed within {self.handshake_timeout} s")
                elif conn.partial_since is not None and now - conn.partial_since > self.frame_timeout:
                    conn.fail(Code.TIMEOUT, f"incomplete frame for more than {self.frame_timeout} s")
                elif now - conn.last_seen > self.idle_timeout:
                    conn.fail(Code.TIMEOUT, f"silent for more than {self.idle_timeout} s")
            self._live.watch(now, self.hold_after)
        except Exception:
            logger.exception("testbed watchdog failed; it will run again")
        finally:
            self._tick_handle = self._loop.call_later(self._tick_every, self._tick)

    def _on_connect(self, conn: Connection) -> None:
        self._connections.add(conn)
        self._counts["connections"] += 1
        pending = sum(1 for other in self._connections if other.state != READY and other.closed_at is None)
        if pending > self.max_pending:
            conn.fail(Code.RATE_LIMITED, f"{pending - 1} handshakes already under way; try again later")
        elif not self._handshakes.take(conn.peer_host):
            conn.fail(Code.RATE_LIMITED, f"more than {self.handshake_burst} handshakes from {conn.peer_host} "
                                         f"(at most {self.handshake_rate:g} per second); try again later")

    def _on_lost(self, conn: Connection) -> None:
        self._connections.discard(conn)
        self._release(conn)

    def _release(self, conn: Connection) -> None:
        if self._active is conn:
            self._active = None

    def _record_error(self, code: str, *, fatal: bool) -> None:
        self._errors[code] = self._errors.get(code, 0) + 1
        if fatal:
            self._counts["rejected"] += 1

    def _dispatch(self, conn: Connection, message: dict[str, Any], now: float) -> None:
        kind = message["type"]
        if conn.state != READY and kind != _EXPECTED[conn.state][0]:
            raise ProtocolError(Code.HANDSHAKE, f"got {kind}: {_EXPECTED[conn.state][1]}")
        if conn.state == READY and kind in (HELLO, AUTH):
            raise ProtocolError(Code.HANDSHAKE, f"got {kind}: the handshake is over")
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProtocolError(
                Code.UNKNOWN_TYPE, f"{kind} is not a request; accepted: {', '.join(self._handlers)}"
            )
        self._live.heard_from(conn.session, now)
        try:
            handler(conn, message)
        except Refusal as refusal:
            self._record_error(refusal.code, fatal=False)
            conn.send(pack_body(error_message(refusal.code, str(refusal))))

    def _on_hello(self, conn: Connection, message: dict[str, Any]) -> None:
        try:
            check_version(PROTOCOL_VERSION, message["version"], us="server", them="client")
        except HandshakeError as exc:
            upgrade = "; 2.x authenticates the client: upgrade sim2real on the client" if _major(message) < 2 else ""
            raise ProtocolError(Code.VERSION, f"{exc}{upgrade}") from None
        conn.wanted_session = message.get("session")
        if self._key is None:
            self._admit(conn)
            return
        nonce = message.get("nonce")
        if not (isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES):
            raise ProtocolError(Code.AUTH, f"this testbed requires a key: hello must carry a {NONCE_BYTES}-byte nonce")
        conn.client_nonce, conn.server_nonce, conn.state = nonce, new_nonce(), CHALLENGED
        conn.send(pack_body({"type": CHALLENGE, "nonce": conn.server_nonce}))

    def _on_auth(self, conn: Connection, message: dict[str, Any]) -> None:
        assert self._key is not None
        if not proof_is_valid(self._key, message["proof"], conn.client_nonce, conn.server_nonce, conn.wanted_session):
            raise ProtocolError(Code.AUTH, "authentication failed: the proof does not match this server's key")
        conn.tags = session_tags(self._key, conn.client_nonce, conn.server_nonce, server=True)
        self._admit(conn)

    def _admit(self, conn: Connection) -> None:
        """The handshake is over: take the controlling seat (resuming a session) or refuse, busy."""
        wanted = conn.wanted_session
        active = self._active
        known = {s.session for s in (active, self._live.episode) if s is not None}
        if active is not None and active is not conn:
            if wanted != active.session:
                raise ProtocolError(Code.BUSY, f"serving another client ({active.peer}); one at a time")
            logger.info("session resumed by %s; dropping its old connection %s", conn.peer, active.peer)
            active.close()
        conn.session = wanted if wanted in known else secrets.token_hex(8)
        conn.state = READY
        self._handshakes.refund(conn.peer_host)
        self._active = conn
        logger.info("client %s controls the env (session %s)", conn.peer, conn.session)
        self._live.heard_from(conn.session, time.monotonic())
        conn.send(pack_body({**self._welcome, "session": conn.session}))

    def _on_reset(self, conn: Connection, message: dict[str, Any]) -> None:
        conn.send(self._live.reset(conn.session or "", message.get("seed"), message.get("options")))

    def _on_step(self, conn: Connection, message: dict[str, Any]) -> None:
        value = decode_value(message["action"])
        conn.send(self._live.step(conn.session, message["episode"], message["seq"], value))

    def _on_heartbeat(self, conn: Connection, message: dict[str, Any]) -> None:
        conn.send(_HEARTBEAT_OK_BODY)

    def _on_close(self, conn: Connection, message: dict[str, Any]) -> None:
        self._live.left(conn.session)
        conn.close()


def _major(hello: Mapping[str, Any]) -> int:
    """The major protocol version a HELLO claims (-1 when it is not MAJOR.MINOR)."""
    try:
        return parse_version(hello["version"])[0]
    except HandshakeError:
        return -1
