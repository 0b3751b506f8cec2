"""Testbed server and RemoteEnv over loopback: handshake, exactly-once steps, faults, fuzzing, hold."""

from __future__ import annotations

import os
import random
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np
import pytest
from testbed_security import Lab

from sim2real.testbed import (
    HandshakeError,
    RemoteEnv,
    RemoteError,
    ServerProcess,
    TestbedError,
    TestbedServer,
    TestbedTimeout,
    encoding,
)
from sim2real.testbed import link as link_module
from sim2real.testbed import protocol as p
from sim2real.testbed.auth import load_key_file
from sim2real.testbed.credentials import Credentials

HOLD_AFTER = 0.5


class PointMass(gym.Env):
    """Deterministic 2-D point mass: 21-dim observation, 2-dim action, 50 steps, with hold()."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (21,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.applied = 0
        self.holds = 0
        self.explode = False
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._pos, self._vel, self._t = self.np_random.uniform(-1, 1, 2), np.zeros(2), 0
        return self._obs(), {"start": self._pos.copy()}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self.applied += 1
        if self.explode:
            raise RuntimeError("motor driver fault")
        self._vel = 0.9 * self._vel + 0.1 * action
        self._pos = np.clip(self._pos + self._vel, -5, 5)
        self._t += 1
        return self._obs(), -float(np.linalg.norm(self._pos)), False, self._t >= 50, {"t": self._t}

    def hold(self) -> None:
        self.holds += 1
        self._vel[:] = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel, [self._t / 50], np.zeros(16)]).astype(np.float32)


@pytest.fixture
def server() -> Iterator[TestbedServer]:
    server = TestbedServer(PointMass, hold_after=HOLD_AFTER)
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab.create(tmp_path_factory.mktemp("lab"))


SECURITY = ("plain", "key", "key+tls")
"""The fault tests run on each link: no key (loopback), a shared key, a shared key inside TLS."""


@pytest.fixture(params=SECURITY)
def secured(request: pytest.FixtureRequest, lab: Lab) -> Iterator[tuple[TestbedServer, Credentials | None]]:
    """A PointMass server on one kind of link, and the credentials a good client brings to it."""
    kind = request.param
    key = None if kind == "plain" else load_key_file(lab.key_file)
    tls = lab.server_tls() if kind == "key+tls" else None
    server = TestbedServer(PointMass, hold_after=HOLD_AFTER, key=key, tls=tls)
    server.start_in_thread()
    yield server, None if kind == "plain" else lab.credentials(tls=kind == "key+tls")
    server.stop()


def _server_process(kind: str, lab: Lab) -> ServerProcess:
    """A Pendulum server process on one kind of link."""
    security: dict[str, Any] = {} if kind == "plain" else {"key_file": str(lab.key_file)}
    if kind == "key+tls":
        security.update(tls_cert=str(lab.cert), tls_key=str(lab.cert_key))
    return ServerProcess("Pendulum-v1", **security)


@pytest.fixture
def remote(server: TestbedServer) -> Iterator[RemoteEnv]:
    env = RemoteEnv(server.address)
    yield env
    env.close()


def _wait_for(condition: Any, timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
    return time.monotonic() - start


class RawClient:
    """A bare protocol client, for sending exactly the frames a test wants."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3.0)
        self.decoder = p.FrameDecoder()
        self.pending: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(p.pack_frame(message))

    def receive(self) -> dict[str, Any]:
        while not self.pending:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed the connection"
            self.pending += self.decoder.feed(chunk)
        return p.unpack_message(self.pending.pop(0))

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def hello(self, session: str | None = None) -> dict[str, Any]:
        return self.request({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": session})

    def step(self, episode: int, seq: int, action: Any = (0.1, -0.1)) -> dict[str, Any]:
        wire = encoding.encode_array(np.asarray(action, dtype=np.float32))
        return self.request({"type": p.STEP, "episode": episode, "seq": seq, "action": wire})

    def close(self) -> None:
        self.sock.close()


def test_a_remote_episode_runs_to_the_end(server: TestbedServer, remote: RemoteEnv) -> None:
    assert remote.observation_space == PointMass().observation_space
    assert remote.action_space == PointMass().action_space
    obs, info = remote.reset(seed=3)
    assert obs.shape == (21,) and obs.dtype == np.float32 and len(info["start"]) == 2
    local = PointMass()
    local_obs, _ = local.reset(seed=3)
    np.testing.assert_array_equal(obs, local_obs)
    for t in range(1, 51):
        obs, reward, terminated, truncated, info = remote.step(np.array([0.5, -0.5]))
        local_obs, local_reward, *_ = local.step(np.array([0.5, -0.5], dtype=np.float32))
        np.testing.assert_array_equal(obs, local_obs)
        assert reward == pytest.approx(local_reward) and info["t"] == t and info["env_step_ms"] >= 0
        assert truncated == (t == 50) and not terminated
    assert len(remote.latencies_ms) == 50
    assert server.stats["executed"] == 50 and server.env.unwrapped.applied == 50
    with pytest.raises(RemoteError, match="ended at seq 50; reset first") as caught:
        remote.step(np.zeros(2))
    assert caught.value.code == p.Code.EPISODE_OVER
    remote.reset()
    remote.step(np.zeros(2))


def test_a_major_version_mismatch_is_refused_by_the_server_naming_both(
    server: TestbedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_module, "PROTOCOL_VERSION", "1.0")  # a client from before authentication
    with pytest.raises(RemoteError, match=r"server speaks 2\.0, client speaks 1\.0.*upgrade sim2real") as caught:
        RemoteEnv(server.address)
    assert caught.value.code == p.Code.VERSION
    assert "\n" not in str(caught.value)


def test_a_major_version_mismatch_is_refused_by_the_client_naming_both() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)
    space = encoding.encode_space(PointMass().action_space)

    def fake_server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5.0)
            conn.recv(65536)
            welcome = {"type": p.WELCOME, "version": "9.1", "session": "s", "observation_space": space,
                       "action_space": space}
            conn.sendall(p.pack_frame(welcome))
            conn.recv(65536)

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    try:
        with pytest.raises(HandshakeError, match=r"client speaks 2\.0, testbed tcp://127\.0\.0\.1:\d+ speaks 9\.1"):
            RemoteEnv(f"tcp://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=2.0)
    finally:
        thread.join(5)
        listener.close()


def test_a_space_mismatch_with_the_policy_is_refused_naming_both(server: TestbedServer) -> None:
    policy_obs = gym.spaces.Box(-1.0, 1.0, (21,), np.float32)
    policy_act = PointMass().action_space
    with pytest.raises(HandshakeError) as caught:
        RemoteEnv(server.address, expected_spaces=(policy_obs, policy_act))
    message = str(caught.value)
    assert "observation space mismatch" in message
    assert "policy expects Box(-1.0, 1.0, (21,), float32)" in message
    assert "offers Box(-10.0, 10.0, (21,), float32)" in message
    matching = RemoteEnv(server.address, expected_spaces=PointMass())
    matching.close()


def test_a_second_client_gets_a_typed_busy_error(server: TestbedServer, remote: RemoteEnv) -> None:
    with pytest.raises(RemoteError, match="serving another client") as caught:
        RemoteEnv(server.address)
    assert caught.value.code == p.Code.BUSY
    remote.reset()
    remote.step(np.zeros(2))


def test_bad_addresses_and_a_closed_port_are_typed_errors() -> None:
    with pytest.raises(TestbedError, match="expected tcp://HOST:PORT"):
        RemoteEnv("http://127.0.0.1:80")
    with pytest.raises(TestbedError, match="expected tcp://HOST:PORT"):
        RemoteEnv("tcp://127.0.0.1:notaport")
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with pytest.raises(TestbedError, match="refused the connection"):
        RemoteEnv(f"tcp://127.0.0.1:{port}")


def test_steps_are_executed_once_and_resends_replayed(server: TestbedServer) -> None:
    raw = RawClient(server.port)
    try:
        assert raw.hello()["type"] == p.WELCOME
        episode = raw.request({"type": p.RESET, "seed": 1})["episode"]
        first = raw.step(episode, 1)
        assert first["type"] == p.STEP_OK and first["seq"] == 1
        assert raw.step(episode, 1, action=(0.9, 0.9)) == first
        assert server.stats["executed"] == 1 and server.stats["replayed"] == 1
        gap = raw.step(episode, 3)
        assert (gap["type"], gap["code"]) == (p.ERROR, p.Code.SEQ_GAP) and "expected 2" in gap["message"]
        assert raw.step(episode, 2)["type"] == p.STEP_OK
        stale = raw.step(episode, 1)
        assert stale["code"] == p.Code.STALE_SEQ
        assert stale["message"] == f"seq 1 of episode {episode} is stale; expected 3"
        assert raw.step(episode + 5, 3)["code"] == p.Code.EPISODE
        for action in ((2.0, 0.0), (np.nan, 0.0), (0.0, 0.0, 0.0)):
            assert raw.step(episode, 3, action)["code"] == p.Code.BAD_ACTION
        assert raw.step(episode, 3)["type"] == p.STEP_OK
        assert server.stats["executed"] == 3 == server.env.unwrapped.applied
    finally:
        raw.close()
    other = RawClient(server.port)
    try:
        _wait_for(lambda: server._active is None)
        assert other.hello()["type"] == p.WELCOME
        assert other.step(episode, 4)["code"] == p.Code.EPISODE
    finally:
        other.close()


def test_handshake_rules_are_enforced(server: TestbedServer) -> None:
    raw = RawClient(server.port)
    try:
        reply = raw.request({"type": p.HEARTBEAT})
        assert (reply["type"], reply["code"]) == (p.ERROR, p.Code.HANDSHAKE)
        assert raw.sock.recv(1) == b""
    finally:
        raw.close()
    raw = RawClient(server.port)
    try:
        raw.hello()
        assert raw.hello()["code"] == p.Code.HANDSHAKE
        assert raw.sock.recv(1) == b""
    finally:
        raw.close()


def test_an_env_exception_is_a_typed_error_and_the_server_carries_on(
    server: TestbedServer, remote: RemoteEnv
) -> None:
    remote.reset()
    server.env.unwrapped.explode = True
    with pytest.raises(RemoteError, match=r"env\.step raised RuntimeError: motor driver fault") as caught:
        remote.step(np.zeros(2))
    assert caught.value.code == p.Code.ENV_ERROR
    with pytest.raises(TestbedError, match="call reset"):
        remote.step(np.zeros(2))
    server.env.unwrapped.explode = False
    remote.reset()
    remote.step(np.zeros(2))


class FlakyProxy:
    """Loopback TCP proxy that resets both sides of a connection at random byte offsets."""

    def __init__(self, upstream_port: int, cut_probability: float, seed: int) -> None:
        self.upstream_port = upstream_port
        self.cut_probability = cut_probability
        self.rng = random.Random(seed)
        self.resets = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._peers: dict[socket.socket, socket.socket] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    if key.fileobj is self.listener:
                        self._accept(selector)
                    else:
                        self._forward(selector, key.fileobj)
            for sock in list(self._peers):
                self._cut(selector, sock, reset=False)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        downstream, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        for sock, peer in ((downstream, upstream), (upstream, downstream)):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._peers[sock] = peer
            selector.register(sock, selectors.EVENT_READ)

    def _forward(self, selector: selectors.BaseSelector, sock: Any) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._cut(selector, sock, reset=False)
            return
        cut = self.rng.random() < self.cut_probability
        try:
            peer.sendall(data[: self.rng.randint(0, len(data))] if cut else data)
        except OSError:
            cut = True
        if cut:
            self.resets += 1
            self._cut(selector, sock, reset=True)

    def _cut(self, selector: selectors.BaseSelector, sock: socket.socket, reset: bool) -> None:
        peer = self._peers.pop(sock, None)
        if peer is None:
            return
        del self._peers[peer]
        for end in (sock, peer):
            selector.unregister(end)
            if reset:
                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            end.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def test_exactly_once_under_100_connection_resets(secured: tuple[TestbedServer, Credentials | None]) -> None:
    server, credentials = secured
    proxy = FlakyProxy(server.port, cut_probability=0.05, seed=7)
    scheme = server.address.split(":")[0]
    env = RemoteEnv(f"{scheme}://127.0.0.1:{proxy.port}", reconnect_attempts=50, step_timeout=10.0,
                    reset_timeout=10.0, heartbeat_every=0.05, credentials=credentials)
    completed: set[tuple[int, int]] = set()
    try:
        for _ in range(200):
            env.reset()
            truncated = False
            while not truncated:
                _, _, _, truncated, _ = env.step(np.array([0.3, -0.3]))
                completed.add((env.episode, env.seq))
            if proxy.resets >= 100:
                break
    finally:
        env.close()
        proxy.close()
    assert proxy.resets >= 100
    assert server.stats["replayed"] > 0 and env.reconnects > 0
    assert server.stats["executed"] == len(completed) == server.env.unwrapped.applied


def test_a_silent_client_gets_the_env_held(secured: tuple[TestbedServer, Credentials | None]) -> None:
    server, credentials = secured
    env = RemoteEnv(server.address, heartbeat_every=None, credentials=credentials)
    try:
        env.reset()
        env.step(np.array([1.0, 1.0]))
        waited = _wait_for(lambda: server.env.unwrapped.holds == 1)
        assert HOLD_AFTER - 0.05 < waited < HOLD_AFTER + 0.5
        assert server.stats["holds"] == 1
        time.sleep(0.3)
        assert server.env.unwrapped.holds == 1
        env.step(np.zeros(2))
    finally:
        env.close()


def test_heartbeats_keep_an_idle_client_unheld_until_it_closes(
    secured: tuple[TestbedServer, Credentials | None]
) -> None:
    server, credentials = secured
    env = RemoteEnv(server.address, heartbeat_every=0.1, credentials=credentials)
    env.reset()
    env.step(np.zeros(2))
    time.sleep(3 * HOLD_AFTER)
    assert server.env.unwrapped.holds == 0
    env.close()
    _wait_for(lambda: server.env.unwrapped.holds == 1)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _valid_frames() -> list[bytes]:
    action = encoding.encode_array(np.array([0.5], dtype=np.float32))
    messages = [
        {"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None},
        {"type": p.RESET, "seed": 1, "options": None},
        {"type": p.STEP, "episode": 1, "seq": 1, "action": action},
        {"type": p.HEARTBEAT},
    ]
    return [p.pack_frame(m) for m in messages]


def _malformed(rng: random.Random, valid: list[bytes]) -> bytes:
    """One malformed or mutated frame: bad lengths, truncation, garbage, wrong types, bad arrays."""
    base = rng.choice(valid)
    kind = rng.randrange(10)
    if kind == 0:
        return b"\0\0\0\0" + base[4:]
    if kind == 1:
        return b"\xff\xff\xff\xff" + rng.randbytes(rng.randrange(64))
    if kind == 2:
        return p.HEADER.pack(p.MAX_FRAME_BYTES + 1 + rng.randrange(1000)) + base[4:]
    if kind == 3:
        return base[: rng.randrange(1, len(base))]
    if kind == 4:
        return p.HEADER.pack(rng.randrange(len(base), 5000)) + base[4:]
    if kind == 5:
        body = rng.randbytes(rng.randrange(1, 200))
        return p.HEADER.pack(len(body)) + body
    if kind == 6:
        body = bytearray(base[4:])
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        return p.HEADER.pack(len(body)) + bytes(body)
    junk = rng.choice([None, True, -1, 2**64 - 1, 1.5, "x", b"x", [1], {"a": 1}, [["float32"]]])
    if kind == 7:
        message = rng.choice([
            {"type": p.STEP, "episode": junk, "seq": 1, "action": 0.0},
            {"type": p.STEP, "episode": 1, "seq": junk, "action": 0.0},
            {"type": p.STEP, "episode": 1, "seq": 1, "action": junk},
            {"type": p.HELLO, "version": junk},
            {"type": p.RESET, "seed": junk, "options": junk},
            {"type": junk},
        ])
    elif kind == 8:
        message = rng.choice([{"type": "launch"}, {"no_type": 1}, [p.STEP, 1, 1], 42, "step", {"type": p.WELCOME}])
    else:
        array = rng.choice([
            ["object", [1], b"\0" * 8], ["float32", [3], b"\0" * 4], ["float32", [-1], b""],
            ["float32", [2**31, 2**31, 0], b""], ["<U4", [1], b"abcd"], ["float32", [1], "text"],
            ["float64", [1] * 20, b"\0" * 8],
        ])
        message = {"type": p.STEP, "episode": 1, "seq": 1, "action": array}
    body = msgpack.packb(message)
    return p.HEADER.pack(len(body)) + body


def _fuzz_once(port: int, frame: bytes, with_hello: bool) -> bool:
    """Send one frame on a fresh connection; return True if a typed ERROR came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        decoder = p.FrameDecoder()
        if with_hello:
            sock.sendall(_valid_frames()[0])
            while not decoder.feed(sock.recv(65536)):
                pass
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        replies = []
        while chunk := sock.recv(65536):
            replies += decoder.feed(chunk)
    return any(p.unpack_message(body)["type"] == p.ERROR for body in replies)


def test_10000_malformed_frames_leave_the_server_up_and_lean() -> None:
    rng = random.Random(1234)
    valid = _valid_frames()
    with ServerProcess("Pendulum-v1", handshake_burst=100_000) as server:
        for _ in range(200):
            _fuzz_once(server.port, _malformed(rng, valid), rng.random() < 0.5)
        rss_before = _rss_bytes(server.pid)
        typed_errors = sum(_fuzz_once(server.port, _malformed(rng, valid), rng.random() < 0.5) for _ in range(10_000))
        growth = _rss_bytes(server.pid) - rss_before
        assert server.process.poll() is None
        assert growth < 50 * 2**20, f"server RSS grew by {growth / 2**20:.1f} MB"
        assert typed_errors > 9_000
        env = RemoteEnv(server.address)
        try:
            env.reset(seed=0)
            steps, truncated = 0, False
            while not truncated and steps < 1000:
                _, _, _, truncated, _ = env.step(np.array([0.1], dtype=np.float32))
                steps += 1
            assert truncated and steps == 200
        finally:
            env.close()


@pytest.mark.parametrize("kind", SECURITY)
def test_a_killed_server_is_a_testbed_error_within_the_step_deadline(kind: str, lab: Lab) -> None:
    with _server_process(kind, lab) as server:
        env = RemoteEnv(server.address, step_timeout=2.0,
                        credentials=None if kind == "plain" else lab.credentials(tls=kind == "key+tls"))
        try:
            env.reset(seed=0)
            for _ in range(5):
                env.step(np.zeros(1))
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(5)
            start = time.monotonic()
            with pytest.raises(TestbedError) as caught:
                env.step(np.zeros(1))
            elapsed = time.monotonic() - start
        finally:
            env.close()
    assert not isinstance(caught.value, TestbedTimeout)
    assert elapsed < env.step_timeout


@pytest.mark.parametrize("kind", SECURITY)
def test_a_hung_server_is_a_timeout_at_the_step_deadline(kind: str, lab: Lab) -> None:
    with _server_process(kind, lab) as server:
        env = RemoteEnv(server.address, step_timeout=0.5,
                        credentials=None if kind == "plain" else lab.credentials(tls=kind == "key+tls"))
        try:
            env.reset(seed=0)
            env.step(np.zeros(1))
            os.kill(server.pid, signal.SIGSTOP)
            try:
                start = time.monotonic()
                with pytest.raises(TestbedTimeout, match=r"no reply within the deadline|deadline passed|busy"):
                    env.step(np.zeros(1))
                elapsed = time.monotonic() - start
            finally:
                os.kill(server.pid, signal.SIGCONT)
        finally:
            env.close()
    assert elapsed < env.step_timeout + 0.25
