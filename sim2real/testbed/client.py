"""RemoteEnv: a gymnasium.Env whose reset/step run on a testbed server over TCP.

Plain blocking sockets with per-call deadlines (no event loop on the client side: lower latency,
simpler failure modes). One lock guards the socket, so the idle heartbeat thread can never
interleave its frames with a step's. A step that loses its connection reconnects with the same
session token and resends the same (episode, seq); the server's exactly-once cache makes the
resend safe. A refused connection (nobody listening) is final at once; a silent server is a
TestbedTimeout at the deadline. With a key the client answers the server's challenge and tags every
frame (see ``auth``); it refuses a server that cannot prove it holds the same key. ``tls://``
addresses wrap the socket in TLS, the server checked against a CA file or a pinned fingerprint.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np

from sim2real.testbed.auth import KEY_FILE_ENV, FrameTags, client_proof, new_nonce, session_tags
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.encoding import decode_space, decode_value, encode_value, spaces_match
from sim2real.testbed.protocol import (
    AUTH,
    CHALLENGE,
    CLOSE,
    ERROR,
    HEADER,
    HEARTBEAT,
    HEARTBEAT_OK,
    HELLO,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    RESET,
    RESET_OK,
    STEP,
    STEP_OK,
    WELCOME,
    Code,
    HandshakeError,
    ProtocolError,
    RemoteError,
    TestbedError,
    TestbedTimeout,
    check_length,
    check_version,
    frame,
    pack_body,
    unpack_message,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
LATENCY_HISTORY = 100_000

_HEARTBEAT_BODY = pack_body({"type": HEARTBEAT})
_CLOSE_BODY = pack_body({"type": CLOSE})
SCHEMES = ("tcp", "tls")
_KEEPS_CONNECTION = (
    Code.EPISODE, Code.SEQ_GAP, Code.STALE_SEQ, Code.EPISODE_OVER, Code.BAD_ACTION, Code.ENV_ERROR,
)


class _Lost(Exception):
    """The connection broke (reset, EOF, broken pipe): the request may be resent."""


def parse_address(address: str) -> tuple[str, str, int]:
    """Split "tcp://host:port" or "tls://host:port" into (scheme, host, port)."""
    try:
        parts = urlsplit(address)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:
        scheme = host = port = None
    if scheme not in SCHEMES or not host or port is None:
        raise TestbedError(f"testbed address {address!r} is not accepted; expected tcp://HOST:PORT or tls://HOST:PORT")
    return scheme, host, port


def _spaces_of(expected: Any) -> tuple[gym.Space, gym.Space]:
    if hasattr(expected, "observation_space") and hasattr(expected, "action_space"):
        return expected.observation_space, expected.action_space
    if isinstance(expected, (tuple, list)) and len(expected) == 2:
        return expected[0], expected[1]
    raise TestbedError(
        f"expected_spaces={expected!r}; accepted: (observation_space, action_space) or an object with both"
    )


class RemoteEnv(gym.Env):
    """A gymnasium.Env driving a testbed server; spaces come from the server's WELCOME.

    ``latencies_ms`` holds the round trip of the last ``LATENCY_HISTORY`` steps (reconnects
    included); each step's ``info["env_step_ms"]`` is the server's own env.step time.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        address: str,
        connect_timeout: float = 5.0,
        step_timeout: float = 2.0,
        reset_timeout: float = 10.0,
        heartbeat_every: float | None = 0.2,
        expected_spaces: Any = None,
        reconnect_attempts: int = 5,
        credentials: Credentials | None = None,
        session: str | None = None,
    ) -> None:
        timeouts = {"connect_timeout": connect_timeout, "step_timeout": step_timeout,
                    "reset_timeout": reset_timeout}
        if heartbeat_every is not None:
            timeouts["heartbeat_every"] = heartbeat_every
        for name, value in timeouts.items():
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise TestbedError(f"{name}={value!r}; accepted: a finite number of seconds > 0")
        self.address = address
        self._scheme, self._host, self._port = parse_address(address)
        self.credentials = credentials or Credentials()
        if (self._scheme == "tls") != (self.credentials.tls is not None):
            raise TestbedError(
                f"testbed {address}: a tls:// address needs a CA file (--tls-ca) or a pinned fingerprint "
                f"(--tls-fingerprint), and those apply to tls:// addresses only"
            )
        self._tls_context = self.credentials.tls.context() if self.credentials.tls else None
        self._tags: FrameTags | None = None
        self._handshaking = False
        self.connect_timeout = float(connect_timeout)
        self.step_timeout = float(step_timeout)
        self.reset_timeout = float(reset_timeout)
        self.reconnect_attempts = int(reconnect_attempts)
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.reconnects = 0
        self._expected = None if expected_spaces is None else _spaces_of(expected_spaces)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._session: str | None = session
        self._spaces_known = False
        self.control_hz: float | None = None
        self._episode: int | None = None
        self._seq = 0
        self._broken: str | None = "no episode yet; call reset()"
        self._last_io = time.monotonic()
        self._closed = False
        deadline = time.monotonic() + self.connect_timeout
        with self._lock:
            self._retrying(lambda: self._connect(deadline), deadline)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if heartbeat_every:
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, args=(float(heartbeat_every),), name="testbed-heartbeat",
                daemon=True,
            )
            self._heartbeat.start()

    @property
    def episode(self) -> int | None:
        """The server's id of the current episode (None before the first reset)."""
        return self._episode

    @property
    def session(self) -> str | None:
        """The session token the server gave us: keep it to resume after a crash (``session=`` here)."""
        return self._session

    @property
    def seq(self) -> int:
        """Sequence number of the last completed step of the current episode."""
        return self._seq

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start a new episode on the server; the seed and options are forwarded to its env."""
        super().reset(seed=seed)
        try:
            request = pack_body({"type": RESET, "seed": seed, "options": options})
        except TypeError as exc:
            raise TestbedError(f"reset options {options!r:.200} are not plain data: {exc}") from None
        self._broken = "the reset did not complete; call reset()"
        reply = self._request(request, self.reset_timeout, RESET_OK)
        self._episode, self._seq, self._broken = reply["episode"], 0, None
        info = reply["info"]
        info["env_step_ms"] = reply["env_ms"]
        return self._obs(reply["obs"]), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Send one action exactly once (resending on a reset connection); latency goes to latencies_ms."""
        if self._broken is not None:
            raise TestbedError(f"cannot step: {self._broken}")
        seq = self._seq + 1
        request = pack_body(
            {"type": STEP, "episode": self._episode, "seq": seq, "action": self._encode_action(action)}
        )
        start = time.perf_counter()
        self._broken = f"step {seq} of episode {self._episode} failed; call reset()"
        reply = self._request(request, self.step_timeout, STEP_OK)
        self.latencies_ms.append((time.perf_counter() - start) * 1e3)
        if reply["episode"] != self._episode or reply["seq"] != seq:
            got = f"episode {reply['episode']} seq {reply['seq']}"
            want = f"episode {self._episode} seq {seq}"
            raise ProtocolError(Code.BAD_MESSAGE, f"reply for {got}; expected {want}")
        self._seq, self._broken = seq, None
        info = reply["info"]
        info["env_step_ms"] = reply["env_ms"]
        return self._obs(reply["obs"]), reply["reward"], reply["terminated"], reply["truncated"], info

    def resend(self, episode: int, seq: int, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Send step `seq` of `episode` again, as a client that crashed after sending it (or before) would.

        With this client's session (``session=`` at construction) the server answers a step it
        already applied with the reply it sent then, and executes one it never received: either
        way the action is applied once. A server that cannot tell (a restart without its log, or
        the step was never applied before it restarted) raises RemoteError.
        """
        self._episode, self._seq, self._broken = episode, seq - 1, None
        return self.step(action)

    def close(self) -> None:
        """Say goodbye (the server then holds the env if mid-episode) and release the socket."""
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._stop.set()
            self._heartbeat.join(self.step_timeout + 1.0)
        if self._lock.acquire(timeout=self.step_timeout):
            try:
                if self._sock is not None:
                    self._sock.settimeout(min(0.5, self.step_timeout))
                    self._sock.sendall(self._frame(_CLOSE_BODY))
            except OSError:
                pass
            finally:
                self._drop()
                self._lock.release()

    def _encode_action(self, action: Any) -> Any:
        space = self.action_space
        if isinstance(space, gym.spaces.Box):
            array = np.asarray(action)
            if array.shape != space.shape:
                raise TestbedError(f"action has shape {array.shape}; accepted: shape {space.shape}")
            return encode_value(array.astype(space.dtype, copy=False))
        return encode_value(int(action))

    def _obs(self, raw: Any) -> Any:
        value = decode_value(raw)
        if isinstance(self.observation_space, gym.spaces.Box):
            return np.asarray(value, dtype=self.observation_space.dtype)
        return value

    def _request(self, body: bytes, timeout: float, expect: str) -> dict[str, Any]:
        """Send a request and return the reply, reconnecting and resending on a lost connection."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise TestbedTimeout(f"testbed {self.address}: the connection stayed busy for {timeout} s")
        try:
            return self._expect(self._retrying(lambda: self._exchange(body, deadline), deadline), expect)
        finally:
            self._lock.release()

    def _exchange(self, body: bytes, deadline: float) -> dict[str, Any]:
        if self._sock is None:
            self._connect(deadline)
        self._send(body, deadline)
        return self._receive(deadline)

    def _retrying(self, attempt: Callable[[], _T], deadline: float) -> _T:
        """Run attempt(); on a lost connection drop the socket and retry (at once, then backing off)."""
        failures = 0
        while True:
            try:
                return attempt()
            except _Lost as lost:
                self._drop()
                failures += 1
                if failures > self.reconnect_attempts:
                    hint = ""
                    if self._handshaking and self._scheme == "tcp":
                        hint = "; it closed during the handshake: if it serves TLS, connect with tls://"
                    raise TestbedError(
                        f"testbed {self.address}: connection lost {failures} times in a row ({lost}){hint}"
                    ) from None
                if failures > 1:
                    time.sleep(min(0.005 * 2 ** (failures - 1), max(0.0, deadline - time.monotonic())))
            except BaseException:
                self._drop()
                raise

    def _expect(self, reply: dict[str, Any], expect: str) -> dict[str, Any]:
        if reply["type"] == ERROR:
            if reply["code"] not in _KEEPS_CONNECTION:
                self._drop()
            raise RemoteError(reply["code"], reply["message"])
        if reply["type"] != expect:
            self._drop()
            raise ProtocolError(Code.BAD_MESSAGE, f"got a {reply['type']} reply; expected {expect}")
        return reply

    def _connect(self, deadline: float) -> None:
        """Open the socket (TLS-wrapped for tls://) and run the handshake, resuming our session if any."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TestbedTimeout(f"testbed {self.address}: no time left to connect")
        try:
            sock = socket.create_connection((self._host, self._port), timeout=remaining)
        except ConnectionRefusedError as exc:
            raise TestbedError(f"testbed {self.address} refused the connection: {exc}") from None
        except TimeoutError:
            raise TestbedTimeout(f"testbed {self.address}: no connection within the deadline") from None
        except OSError as exc:
            raise TestbedError(f"testbed {self.address} is unreachable: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._handshaking = True
        self._sock = self._wrap_tls(sock, deadline) if self._tls_context is not None else sock
        self._buffer.clear()
        if self._spaces_known:
            self.reconnects += 1
        nonce = new_nonce()
        self._send(pack_body({"type": HELLO, "version": PROTOCOL_VERSION, "session": self._session, "nonce": nonce}),
                   deadline)
        reply = self._receive(deadline)
        key = self.credentials.key
        if reply["type"] == CHALLENGE:
            if key is None:
                raise TestbedError(
                    f"testbed {self.address} requires a key: pass --key-file FILE (or set {KEY_FILE_ENV})"
                )
            proof = client_proof(key, nonce, reply["nonce"], self._session)
            self._send(pack_body({"type": AUTH, "proof": proof}), deadline)
            self._tags = session_tags(key, nonce, reply["nonce"], server=False)
            reply = self._receive(deadline)
        elif key is not None and reply["type"] == WELCOME:
            raise TestbedError(
                f"testbed {self.address} runs without a key, so it cannot prove it is the testbed the key is for; "
                f"refusing to connect (drop --key-file to use a key-less server on this machine)"
            )
        welcome = self._expect(reply, WELCOME)
        check_version(PROTOCOL_VERSION, welcome["version"], us="client", them=f"testbed {self.address}")
        observation_space = decode_space(welcome["observation_space"])
        action_space = decode_space(welcome["action_space"])
        if not self._spaces_known:
            self.observation_space, self.action_space = observation_space, action_space
            self._check_expected()
            self.control_hz = welcome.get("control_hz")
            self._spaces_known = True
        elif not (spaces_match(observation_space, self.observation_space)
                  and spaces_match(action_space, self.action_space)):
            raise HandshakeError(f"testbed {self.address} changed its spaces across a reconnect")
        self._session = welcome["session"]
        self._handshaking = False

    def _wrap_tls(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        """Run the TLS handshake and check the server's certificate; failures are final, one line each."""
        assert self._tls_context is not None and self.credentials.tls is not None
        try:
            sock.settimeout(max(1e-3, deadline - time.monotonic()))
            wrapped = self._tls_context.wrap_socket(sock, server_hostname=self._host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TestbedError(
                f"testbed {self.address}: its certificate failed verification ({exc.verify_message}); "
                f"refusing to connect"
            ) from None
        except ssl.SSLEOFError as exc:
            sock.close()
            raise _Lost(f"the connection ended in the TLS handshake ({exc.reason})") from None
        except ssl.SSLError as exc:
            sock.close()
            raise TestbedError(
                f"testbed {self.address}: TLS handshake failed ({exc.reason or exc}); "
                f"if the server does not serve TLS, connect with tcp://"
            ) from None
        except TimeoutError:
            sock.close()
            raise TestbedTimeout(f"testbed {self.address}: no TLS handshake within the deadline") from None
        except OSError as exc:
            sock.close()
            raise _Lost(f"the connection broke in the TLS handshake ({exc})") from None
        try:
            self.credentials.tls.check_pin(wrapped.getpeercert(binary_form=True), self.address)
        except TestbedError:
            wrapped.close()
            raise
        return wrapped

    def _check_expected(self) -> None:
        if self._expected is None:
            return
        for what, ours, theirs in (("observation", self._expected[0], self.observation_space),
                                   ("action", self._expected[1], self.action_space)):
            if not spaces_match(ours, theirs):
                raise HandshakeError(
                    f"{what} space mismatch: the policy expects {ours!r}, "
                    f"testbed {self.address} offers {theirs!r}"
                )

    def _frame(self, body: bytes) -> bytes:
        return frame(body if self._tags is None else self._tags.seal(body))

    def _send(self, body: bytes, deadline: float) -> None:
        sock = self._live_socket(deadline)
        try:
            sock.sendall(self._frame(body))
        except TimeoutError:
            raise TestbedTimeout(f"testbed {self.address}: could not send within the deadline") from None
        except OSError as exc:
            raise _Lost(f"send failed: {exc}") from None
        self._last_io = time.monotonic()

    def _receive(self, deadline: float) -> dict[str, Any]:
        """Read one frame before the deadline and return the validated message (tag checked and removed)."""
        buffer = self._buffer
        while True:
            if len(buffer) >= 4:
                length = self._frame_length(HEADER.unpack_from(buffer)[0])
                if len(buffer) >= 4 + length:
                    body = bytes(buffer[4:4 + length])
                    del buffer[:4 + length]
                    self._last_io = time.monotonic()
                    return self._open(body)
            sock = self._live_socket(deadline)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TestbedTimeout(
                    f"testbed {self.address}: no reply within the deadline (server hung or network stalled)"
                ) from None
            except OSError as exc:
                raise _Lost(f"receive failed: {exc}") from None
            if not chunk:
                raise _Lost("the server closed the connection")
            buffer += chunk

    def _open(self, body: bytes) -> dict[str, Any]:
        """Check the tag and decode; in the handshake an untagged ERROR is taken (it can only end the attempt)."""
        if self._tags is None:
            return unpack_message(body)
        try:
            return unpack_message(self._tags.open(body))
        except ProtocolError:
            if self._handshaking:
                message = unpack_message(body)
                if message["type"] == ERROR:
                    return message
            raise

    def _frame_length(self, length: int) -> int:
        """Check a received frame length; in the handshake, a non-frame means the server speaks something else."""
        try:
            return check_length(length, MAX_FRAME_BYTES)
        except ProtocolError:
            if not self._handshaking:
                raise
            hint = "tcp://" if self._scheme == "tls" else "tls:// if it serves TLS"
            raise TestbedError(
                f"testbed {self.address} does not answer in the sim2real testbed protocol; connect with {hint}"
            ) from None

    def _live_socket(self, deadline: float) -> socket.socket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TestbedTimeout(f"testbed {self.address}: deadline passed")
        if self._sock is None:
            raise _Lost("not connected")
        self._sock.settimeout(remaining)
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()
        self._tags = None

    def _heartbeat_loop(self, every: float) -> None:
        """Keep the link alive while idle; never blocks a step (skips when the lock is taken)."""
        while not self._stop.wait(every / 2):
            if time.monotonic() - self._last_io < every or not self._lock.acquire(blocking=False):
                continue
            try:
                if self._sock is not None:
                    deadline = time.monotonic() + self.step_timeout
                    self._send(_HEARTBEAT_BODY, deadline)
                    self._expect(self._receive(deadline), HEARTBEAT_OK)
            except (TestbedError, _Lost) as exc:
                logger.warning("testbed %s: heartbeat failed (%s); reconnecting at the next request",
                               self.address, exc)
                self._drop()
            finally:
                self._lock.release()
