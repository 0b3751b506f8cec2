"""RemoteEnv: a gymnasium.Env whose reset/step run on a testbed server over TCP.

One lock guards the link, so the idle heartbeat thread can never interleave its frames with a
step's. A step that loses its connection reconnects with the same session token and resends the
same (episode, seq); the server's exactly-once cache makes the resend safe. A refused connection
(nobody listening) is final at once; a silent server is a TestbedTimeout at the deadline. The
socket, framing, TLS and the authenticated handshake are the ``link``'s: ``tls://`` addresses
wrap the socket in TLS, the server checked against a CA file or a pinned fingerprint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import gymnasium as gym
import numpy as np

from sim2real.testbed.credentials import Credentials
from sim2real.testbed.encoding import decode_space, decode_value, encode_value, spaces_match
from sim2real.testbed.link import Link, Lost
from sim2real.testbed.protocol import (
    CLOSE,
    HEARTBEAT,
    HEARTBEAT_OK,
    RESET,
    RESET_OK,
    STEP,
    STEP_OK,
    Code,
    HandshakeError,
    ProtocolError,
    TestbedError,
    TestbedTimeout,
    pack_body,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
LATENCY_HISTORY = 100_000

_HEARTBEAT_BODY = pack_body({"type": HEARTBEAT})
_CLOSE_BODY = pack_body({"type": CLOSE})


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
        self.credentials = credentials or Credentials()
        self._link = Link(address, self.credentials)
        self.connect_timeout = float(connect_timeout)
        self.step_timeout = float(step_timeout)
        self.reset_timeout = float(reset_timeout)
        self.reconnect_attempts = int(reconnect_attempts)
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self._expected = None if expected_spaces is None else _spaces_of(expected_spaces)
        self._lock = threading.Lock()
        self._session: str | None = session
        self._spaces_known = False
        self._first_link = 0  # sockets the link had opened when the first handshake completed
        self.control_hz: float | None = None
        self._episode: int | None = None
        self._seq = 0
        self._broken: str | None = "no episode yet; call reset()"
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
    def reconnects(self) -> int:
        """Connections opened again after the first handshake (each lost connection that was reopened)."""
        return 0 if not self._spaces_known else self._link.opened - self._first_link

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
                self._link.say_goodbye(_CLOSE_BODY, min(0.5, self.step_timeout))
            finally:
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
            return self._link.expect(self._retrying(lambda: self._exchange(body, deadline), deadline), expect)
        finally:
            self._lock.release()

    def _exchange(self, body: bytes, deadline: float) -> dict[str, Any]:
        if not self._link.connected:
            self._connect(deadline)
        self._link.send(body, deadline)
        return self._link.receive(deadline)

    def _retrying(self, attempt: Callable[[], _T], deadline: float) -> _T:
        """Run attempt(); on a lost connection drop the socket and retry (at once, then backing off)."""
        failures = 0
        while True:
            try:
                return attempt()
            except Lost as lost:
                self._link.drop()
                failures += 1
                if failures > self.reconnect_attempts:
                    hint = ""
                    if self._link.handshaking and self._link.scheme == "tcp":
                        hint = "; it closed during the handshake: if it serves TLS, connect with tls://"
                    raise TestbedError(
                        f"testbed {self.address}: connection lost {failures} times in a row ({lost}){hint}"
                    ) from None
                if failures > 1:
                    time.sleep(min(0.005 * 2 ** (failures - 1), max(0.0, deadline - time.monotonic())))
            except BaseException:
                self._link.drop()
                raise

    def _connect(self, deadline: float) -> None:
        """Open the link (handshake included), resuming our session if any, and check the server's spaces."""
        welcome = self._link.connect(deadline, self._session)
        observation_space = decode_space(welcome["observation_space"])
        action_space = decode_space(welcome["action_space"])
        if not self._spaces_known:
            self.observation_space, self.action_space = observation_space, action_space
            self._check_expected()
            self.control_hz = welcome.get("control_hz")
            self._spaces_known = True
            self._first_link = self._link.opened
        elif not (spaces_match(observation_space, self.observation_space)
                  and spaces_match(action_space, self.action_space)):
            raise HandshakeError(f"testbed {self.address} changed its spaces across a reconnect")
        self._session = welcome["session"]
        self._link.handshake_done()

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

    def _heartbeat_loop(self, every: float) -> None:
        """Keep the link alive while idle; never blocks a step (skips when the lock is taken)."""
        while not self._stop.wait(every / 2):
            if time.monotonic() - self._link.last_io < every or not self._lock.acquire(blocking=False):
                continue
            try:
                if self._link.connected:
                    deadline = time.monotonic() + self.step_timeout
                    self._link.send(_HEARTBEAT_BODY, deadline)
                    self._link.expect(self._link.receive(deadline), HEARTBEAT_OK)
            except (TestbedError, Lost) as exc:
                logger.warning("testbed %s: heartbeat failed (%s); reconnecting at the next request",
                               self.address, exc)
                self._link.drop()
            finally:
                self._lock.release()
