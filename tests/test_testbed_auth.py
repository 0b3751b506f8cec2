"""The authenticated testbed link: key files, the challenge–response, tagged frames, TLS, rate limits, hostile peers."""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testbed_security import Lab
from typer.testing import CliRunner

from sim2real.bench.latency import TrivialEnv
from sim2real.cli import app
from sim2real.testbed import RemoteEnv, RemoteError, ServerProcess, TestbedError, TestbedServer, encoding
from sim2real.testbed import protocol as p
from sim2real.testbed.auth import (
    FrameTags,
    client_proof,
    generate_key_file,
    load_key_file,
    new_nonce,
    proof_is_valid,
    session_tags,
)
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.tls import certificate_fingerprint, parse_fingerprint, server_context

COUNTING_ENV = "sim2real.bench.latency:TrivialEnv"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab.create(tmp_path_factory.mktemp("lab"))


@pytest.fixture
def keyed(lab: Lab) -> Iterator[TestbedServer]:
    server = TestbedServer(TrivialEnv, key=load_key_file(lab.key_file))
    server.start_in_thread()
    yield server
    server.stop()


# --- key files ---------------------------------------------------------------------------------


def test_keygen_writes_a_private_random_key_and_never_replaces_one_unasked(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "robot.key")
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_key_file(path)
    assert len(key) == 32 and key != load_key_file(generate_key_file(tmp_path / "other.key"))
    with pytest.raises(TestbedError, match="exists"):
        generate_key_file(path)
    assert load_key_file(path) == key
    assert load_key_file(generate_key_file(path, overwrite=True)) != key


@pytest.mark.parametrize(("mode", "content", "fragment"), [
    (0o644, None, r"readable by others \(mode 0644\).*chmod 600"),
    (0o640, None, r"readable by others \(mode 0640\)"),
    (0o600, "not hex at all", "does not hold a key; accepted: 16-1024 bytes as hex"),
    (0o600, "abcd", "does not hold a key"),
])
def test_a_key_file_others_can_read_or_without_a_key_is_refused(
    tmp_path: Path, mode: int, content: str | None, fragment: str
) -> None:
    path = generate_key_file(tmp_path / "k")
    if content is not None:
        path.write_text(content)
    path.chmod(mode)
    with pytest.raises(TestbedError, match=fragment):
        load_key_file(path)


def test_the_cli_writes_keys_and_prints_fingerprints_and_refuses_in_one_line(tmp_path: Path, lab: Lab) -> None:
    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    made = cli("testbed", "keygen", str(tmp_path / "k"))
    assert made.exit_code == 0 and (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    again = cli("testbed", "keygen", str(tmp_path / "k"))
    assert again.exit_code == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    printed = cli("testbed", "fingerprint", str(lab.cert))
    assert printed.exit_code == 0 and parse_fingerprint(printed.stdout) == parse_fingerprint(
        certificate_fingerprint(lab.cert))
    (tmp_path / "k").chmod(0o644)
    for args, fragment in (
        (("serve", "driving", "--key-file", str(tmp_path / "k")), "readable by others"),
        (("serve", "driving", "--host", "0.0.0.0"), "without a key"),
        (("serve", "driving", "--tls-cert", str(lab.cert)), "needs both a certificate"),
        (("evaluate", "driving-ppo-dr", "--task", "driving", "--testbed", "tls://127.0.0.1:9"), "needs a CA file"),
    ):
        refused = cli(*args)
        assert refused.exit_code == 2, args
        assert fragment in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


# --- the proof and the frame tags ----------------------------------------------------------------


def test_a_proof_holds_for_one_nonce_pair_and_session_only() -> None:
    key, client, server = os.urandom(32), new_nonce(), new_nonce()
    proof = client_proof(key, client, server, "s1")
    assert proof_is_valid(key, proof, client, server, "s1")
    assert not proof_is_valid(key, proof, client, new_nonce(), "s1")
    assert not proof_is_valid(key, proof, new_nonce(), server, "s1")
    assert not proof_is_valid(key, proof, client, server, "s2")
    assert not proof_is_valid(os.urandom(32), proof, client, server, "s1")
    assert key not in proof


def test_tagged_frames_refuse_tampering_replay_reordering_and_reflection() -> None:
    key, client_nonce, server_nonce = os.urandom(32), new_nonce(), new_nonce()

    def pair() -> tuple[FrameTags, FrameTags]:
        return (session_tags(key, client_nonce, server_nonce, server=False),
                session_tags(key, client_nonce, server_nonce, server=True))

    client, server = pair()
    first, second = client.seal(b"reset"), client.seal(b"step")
    assert server.open(first) == b"reset" and server.open(second) == b"step"
    reply = server.seal(b"ok")
    assert client.open(reply) == b"ok"
    for forged in (first, b"X" + second[1:], second[:-1] + bytes([second[-1] ^ 1]), reply, b"short"):
        client, server = pair()
        server.open(client.seal(b"reset"))
        with pytest.raises(p.ProtocolError, match="failed authentication") as caught:
            server.open(forged)  # replayed, altered, tag flipped, reflected, cut
        assert caught.value.code == p.Code.AUTH


# --- the handshake over a real socket -------------------------------------------------------------


def test_a_client_with_the_key_drives_the_env_and_every_other_is_refused_in_one_line(
    keyed: TestbedServer, lab: Lab
) -> None:
    env = RemoteEnv(keyed.address, credentials=lab.credentials(tls=False))
    try:
        _, info = env.reset(seed=0)
        assert info["resets"] == 1
        for _ in range(10):
            env.step(np.zeros(2, np.float32))
        assert keyed.env.unwrapped.calls == {"resets": 1, "steps": 10}
    finally:
        env.close()
    attempts = {
        "requires a key: pass --key-file": None,
        "refused \\(auth\\): authentication failed": Credentials(key=os.urandom(32)),
    }
    for fragment, credentials in attempts.items():
        with pytest.raises(TestbedError, match=fragment) as caught:
            RemoteEnv(keyed.address, credentials=credentials)
        assert "\n" not in str(caught.value)
    assert keyed.env.unwrapped.calls == {"resets": 1, "steps": 10}


def test_a_client_with_a_key_refuses_a_server_that_has_none() -> None:
    server = TestbedServer(TrivialEnv)
    server.start_in_thread()
    try:
        with pytest.raises(TestbedError, match="runs without a key, so it cannot prove"):
            RemoteEnv(server.address, credentials=Credentials(key=os.urandom(32)))
    finally:
        server.stop()


def test_without_a_key_the_server_listens_on_loopback_only_unless_told_insecure() -> None:
    for host in ("0.0.0.0", "::", "192.0.2.7", "robot.lab"):
        with pytest.raises(TestbedError, match=f"refusing to serve on {host} without a key"):
            TestbedServer(TrivialEnv, host=host)
    for host in ("127.0.0.1", "127.3.0.1", "localhost", "::1"):
        TestbedServer(TrivialEnv, host=host)
    TestbedServer(TrivialEnv, host="0.0.0.0", insecure=True)  # constructed, never started: tests bind loopback only
    TestbedServer(TrivialEnv, host="0.0.0.0", key=os.urandom(32))


def test_the_session_token_alone_does_not_take_over_a_session(keyed: TestbedServer, lab: Lab) -> None:
    owner = RemoteEnv(keyed.address, credentials=lab.credentials(tls=False))
    try:
        owner.reset()
        raw = _RawPeer(keyed.port)
        raw.send_plain({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": owner._session,
                        "nonce": new_nonce()})
        challenge = raw.receive_plain()
        raw.send_plain({"type": p.AUTH, "proof": client_proof(os.urandom(32), b"", challenge["nonce"], None)})
        assert raw.receive_plain()["code"] == p.Code.AUTH
        raw.close()
        with pytest.raises(RemoteError, match="serving another client") as caught:
            RemoteEnv(keyed.address, credentials=lab.credentials(tls=False))
        assert caught.value.code == p.Code.BUSY
        owner.step(np.zeros(2, np.float32))
        assert keyed.env.unwrapped.calls["steps"] == 1
    finally:
        owner.close()


class _RawPeer:
    """A bare socket speaking frames, from a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0, source_address=(source, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.decoder = p.FrameDecoder()
        self.bodies: list[bytes] = []
        self.sent = bytearray()

    def send_raw(self, data: bytes) -> None:
        self.sent += data
        self.sock.sendall(data)

    def send_plain(self, message: dict[str, Any]) -> None:
        self.send_raw(p.pack_frame(message))

    def receive_body(self) -> bytes | None:
        """The next frame body, or None once the server has closed the connection."""
        while not self.bodies:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return None
            if not chunk:
                return None
            self.bodies += self.decoder.feed(chunk)
        return self.bodies.pop(0)

    def receive_plain(self) -> dict[str, Any]:
        body = self.receive_body()
        assert body is not None, "the server closed the connection"
        return p.unpack_message(body)

    def close(self) -> None:
        self.sock.close()


def _good_session(port: int, key: bytes) -> tuple[bytes, dict[str, bytes]]:
    """A complete authenticated session (hello, auth, reset, one step): its client bytes and handshake values."""
    peer = _RawPeer(port)
    nonce = new_nonce()
    peer.send_plain({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None, "nonce": nonce})
    challenge = peer.receive_plain()
    proof = client_proof(key, nonce, challenge["nonce"], None)
    peer.send_plain({"type": p.AUTH, "proof": proof})
    tags = session_tags(key, nonce, challenge["nonce"], server=False)
    assert p.unpack_message(tags.open(peer.receive_body()))["type"] == p.WELCOME
    peer.send_raw(p.frame(tags.seal(p.pack_body({"type": p.RESET, "seed": 0}))))
    episode = p.unpack_message(tags.open(peer.receive_body()))["episode"]
    action = encoding.encode_array(np.zeros(2, np.float32))
    peer.send_raw(p.frame(tags.seal(p.pack_body({"type": p.STEP, "episode": episode, "seq": 1, "action": action}))))
    assert p.unpack_message(tags.open(peer.receive_body()))["type"] == p.STEP_OK
    peer.send_raw(p.frame(tags.seal(p.pack_body({"type": p.CLOSE}))))
    peer.close()
    return bytes(peer.sent), {"nonce": nonce, "proof": proof}


def _hostile_attempt(port: int, rng: random.Random, captured: bytes, values: dict[str, bytes]) -> str:
    """One connection that must not get through: returns the kind of attempt it was."""
    kind = rng.choice(("no_key", "steps_first", "wrong_key", "replayed_proof", "replayed_session", "fuzzed",
                       "forged_tags"))
    peer = _RawPeer(port, source=f"127.0.0.{rng.randrange(2, 250)}")
    try:
        hello = {"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None, "nonce": new_nonce()}
        action = encoding.encode_array(np.zeros(2, np.float32))
        if kind == "no_key":
            peer.send_plain({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None})
        elif kind == "steps_first":
            peer.send_plain({"type": p.RESET, "seed": 0})
            peer.send_plain({"type": p.STEP, "episode": 1, "seq": 1, "action": action})
        elif kind in ("wrong_key", "replayed_proof", "forged_tags"):
            if kind == "replayed_proof":
                hello["nonce"] = values["nonce"]
            peer.send_plain(hello)
            challenge = peer.receive_body()
            if challenge is not None:
                proof = values["proof"] if kind == "replayed_proof" else os.urandom(32)
                peer.send_plain({"type": p.AUTH, "proof": proof})
                if kind == "forged_tags":
                    peer.send_raw(p.frame(p.pack_body({"type": p.RESET, "seed": 0}) + os.urandom(p.TAG_BYTES)))
        elif kind == "replayed_session":
            peer.send_raw(captured)
        else:
            frames = [p.pack_frame(hello), p.pack_frame({"type": p.AUTH, "proof": os.urandom(32)}),
                      p.pack_frame({"type": p.RESET, "seed": 0}), captured]
            data = bytearray(rng.choice(frames))
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            peer.send_raw(bytes(data[: rng.randrange(1, len(data) + 1)]))
        peer.sock.shutdown(socket.SHUT_WR)
        while peer.receive_body() is not None:
            pass
    except OSError:  # reset, broken pipe, or not connected: the server hung up first, as it should
        pass
    finally:
        peer.close()
    return kind


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_10000_hostile_connections_reach_no_env_call_and_the_server_serves_on(lab: Lab) -> None:
    key = load_key_file(lab.key_file)
    rng = random.Random(2026)
    with ServerProcess(COUNTING_ENV, key_file=str(lab.key_file), handshake_burst=1_000_000) as server:
        captured, values = _good_session(server.port, key)
        for _ in range(200):
            _hostile_attempt(server.port, rng, captured, values)
        rss_before = _rss_bytes(server.pid)
        kinds = [_hostile_attempt(server.port, rng, captured, values) for _ in range(10_000)]
        growth = _rss_bytes(server.pid) - rss_before
        assert server.process.poll() is None
        assert growth < 50 * 2**20, f"server RSS grew by {growth / 2**20:.1f} MB"
        assert min(kinds.count(kind) for kind in set(kinds)) > 1000 and len(set(kinds)) == 7
        env = RemoteEnv(server.address, credentials=Credentials(key=key))
        try:
            _, info = env.reset(seed=0)
            assert info == {"resets": 2, "steps": 1, "env_step_ms": info["env_step_ms"]}  # the good session's alone
            _, _, _, _, info = env.step(np.zeros(2, np.float32))
            assert info["steps"] == 2
        finally:
            env.close()


def test_failed_handshakes_are_rate_limited_per_peer_and_every_refusal_is_logged(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    key = load_key_file(lab.key_file)
    server = TestbedServer(TrivialEnv, key=key, handshake_burst=3, handshake_rate=0.1)
    server.start_in_thread()
    caplog.set_level(logging.WARNING, logger="sim2real.testbed.server")
    try:
        codes = []
        for _ in range(5):
            peer = _RawPeer(server.port, source="127.0.0.9")
            peer.send_plain({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None, "nonce": new_nonce()})
            reply = peer.receive_plain()
            if reply["type"] == p.CHALLENGE:
                peer.send_plain({"type": p.AUTH, "proof": os.urandom(32)})
                reply = peer.receive_plain()
            codes.append(reply["code"])
            peer.close()
        assert codes == [p.Code.AUTH] * 3 + [p.Code.RATE_LIMITED] * 2
        for _ in range(30):  # a good client reconnecting again and again is never limited
            RemoteEnv(server.address, credentials=Credentials(key=key), heartbeat_every=None).close()
    finally:
        server.stop()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused 127.0.0.9:")]
    assert len(refusals) == 5
    assert sum("authentication failed" in r for r in refusals) == 3
    assert sum("more than 3 handshakes from 127.0.0.9" in r for r in refusals) == 2


def test_an_unfinished_handshake_is_closed_at_its_deadline(lab: Lab) -> None:
    server = TestbedServer(TrivialEnv, key=load_key_file(lab.key_file), handshake_timeout=0.3)
    server.start_in_thread()
    try:
        peer = _RawPeer(server.port)
        peer.send_plain({"type": p.HELLO, "version": p.PROTOCOL_VERSION, "session": None, "nonce": new_nonce()})
        assert peer.receive_plain()["type"] == p.CHALLENGE
        start = time.monotonic()
        reply = peer.receive_plain()
        assert reply["code"] == p.Code.TIMEOUT and "handshake not completed" in reply["message"]
        assert 0.2 < time.monotonic() - start < 1.5
        peer.close()
    finally:
        server.stop()


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(lab: Lab) -> Iterator[TestbedServer]:
    server = TestbedServer(TrivialEnv, key=load_key_file(lab.key_file), tls=lab.server_tls())
    server.start_in_thread()
    yield server
    server.stop()


@pytest.mark.parametrize("pin", [False, True], ids=["ca", "pinned"])
def test_a_tls_client_with_key_checks_the_server_and_runs(tls_server: TestbedServer, lab: Lab, pin: bool) -> None:
    assert tls_server.address.startswith("tls://")
    env = RemoteEnv(tls_server.address, credentials=lab.credentials(tls=True, pin=pin))
    try:
        env.reset(seed=0)
        for _ in range(20):
            env.step(np.zeros(2, np.float32))
        assert tls_server.stats["executed"] == 20
    finally:
        env.close()


def _connect_fails(address: str, credentials: Credentials | None, fragment: str) -> None:
    start = time.monotonic()
    with pytest.raises(TestbedError, match=fragment) as caught:
        RemoteEnv(address, credentials=credentials, connect_timeout=3.0)
    assert time.monotonic() - start < 3.0
    assert "\n" not in str(caught.value)


def test_tls_mismatches_wrong_ca_expired_certificate_and_wrong_pin_are_one_line_errors(
    tls_server: TestbedServer, lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sim2real.testbed.server")
    key_only = lab.credentials(tls=False)
    plain_address = tls_server.address.replace("tls://", "tcp://")
    _connect_fails(plain_address, key_only, "closed during the handshake: if it serves TLS, connect with tls://")
    _connect_fails(tls_server.address, Credentials.load(lab.key_file, tls_ca=lab.other_ca.cert_file),
                   r"certificate failed verification \(unable to get local issuer certificate\)")
    _connect_fails(tls_server.address, Credentials.load(lab.key_file, tls_fingerprint="ab" * 32),
                   "presented certificate .* not the pinned AB:AB")
    plain = TestbedServer(TrivialEnv, key=load_key_file(lab.key_file))
    expired = TestbedServer(TrivialEnv, key=load_key_file(lab.key_file),
                            tls=server_context(lab.expired_cert, lab.expired_key))
    for server in (plain, expired):
        server.start_in_thread()
    try:
        _connect_fails(plain.address.replace("tcp://", "tls://"), lab.credentials(tls=True),
                       r"TLS handshake failed \(WRONG_VERSION_NUMBER\).*connect with tcp://")
        _connect_fails(expired.address, lab.credentials(tls=True),
                       r"certificate failed verification \(certificate has expired\)")
    finally:
        plain.stop()
        expired.stop()
    assert tls_server.stats["executed"] == 0
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused 127.0.0.1:")]
    assert any("TLS handshake failed (WRONG_VERSION_NUMBER)" in r for r in refusals)  # the plaintext client
    assert any("TLS handshake failed (TLSV1_ALERT_UNKNOWN_CA)" in r for r in refusals)  # the client of another CA


def test_the_key_reaches_every_testbed_command_from_the_option_or_the_environment(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ServerProcess("sim2real.factory:make_env", {"task": "driving", "target": "real"},
                       key_file=str(lab.key_file), tls_cert=str(lab.cert), tls_key=str(lab.cert_key)) as server:
        testbed = ["--testbed", server.address, "--tls-ca", str(lab.ca.cert_file)]
        evaluate = ["evaluate", "driving-ppo-dr", "--task", "driving", "--episodes", "1", *testbed]
        refused = CliRunner().invoke(app, evaluate)
        assert refused.exit_code == 2 and "requires a key" in refused.output
        ran = CliRunner().invoke(app, [*evaluate, "--key-file", str(lab.key_file), "--out", str(tmp_path / "eval")])
        assert ran.exit_code == 0, ran.output
        monkeypatch.setenv("SIM2REAL_TESTBED_KEY_FILE", str(lab.key_file))
        recorded = CliRunner().invoke(app, ["record", "driving-ppo-dr", "--task", "driving", "--episodes", "1",
                                            "--out", str(tmp_path / "rollouts.jsonl"), *testbed])
        assert recorded.exit_code == 0, recorded.output
    assert (tmp_path / "eval" / "summary.json").exists() and (tmp_path / "rollouts.jsonl").stat().st_size > 0


def test_a_port_out_of_range_and_a_target_beside_a_testbed_are_one_line_errors(tmp_path: Path) -> None:
    for args, fragment in (
        (["serve", "driving", "--port", "99999"], "port 99999 is not accepted; accepted: 0-65535"),
        (["evaluate", "driving-ppo-dr", "--task", "driving", "--target", "truck", "--testbed", "tcp://127.0.0.1:9"],
         "target 'truck' given with a testbed"),
        (["record", "driving-ppo-dr", "--task", "driving", "--target", "truck", "--testbed", "tcp://127.0.0.1:9",
          "--out", str(tmp_path / "r.jsonl")], "target 'truck' given with a testbed"),
    ):
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2 and fragment in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.jsonl").exists()
