"""Round-trip latency of the testbed link (no key, key, key inside TLS), a trivial env served in another process."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.testbed.auth import generate_key_file, new_nonce, session_tags
from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.encoding import encode_array
from sim2real.testbed.process import ServerProcess
from sim2real.testbed.protocol import STEP, STEP_OK, pack_body
from sim2real.testbed.tls import self_signed_certificate


class TrivialEnv(gym.Env):
    """An env that does nothing (constant observation): what is left of a step is the transport.

    Its info counts the resets and steps it has served, so a client can see whether anyone else
    got through before it.
    """

    def __init__(self, obs_dim: int = 21, act_dim: int = 2, episode_length: int = 1000) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self.episode_length = episode_length
        self._obs = np.zeros(obs_dim, np.float32)
        self._t = 0
        self.calls = {"resets": 0, "steps": 0}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Start an episode of constant observations."""
        super().reset(seed=seed)
        self._t = 0
        self.calls["resets"] += 1
        return self._obs, dict(self.calls)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Return the same observation; truncate after episode_length steps."""
        self._t += 1
        self.calls["steps"] += 1
        return self._obs, 0.0, False, self._t >= self.episode_length, dict(self.calls)


LINKS = ("plain", "key", "key+tls")
"""The kinds of link the round trip is measured on: no key, a shared key, a shared key inside TLS."""


def measure_round_trip(
    n_steps: int = 2000, obs_dim: int = 21, act_dim: int = 2, link: str = "plain"
) -> dict[str, float]:
    """p50/p99 (ms) of the STEP round trip over loopback on one kind of link, the server's env step time subtracted.

    "key" and "key+tls" make a throwaway key (and a self-signed certificate, pinned) in a temporary folder.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}; accepted: an int >= 1")
    if link not in LINKS:
        raise ValueError(f"link={link!r}; accepted: {', '.join(LINKS)}")
    kwargs = {"obs_dim": obs_dim, "act_dim": act_dim}
    with tempfile.TemporaryDirectory() as folder:
        security: dict[str, str] = {}
        credentials = None
        if link != "plain":
            security["key_file"] = str(generate_key_file(Path(folder) / "bench.key"))
            fingerprint = None
            if link == "key+tls":
                security.update(tls_cert=f"{folder}/cert.pem", tls_key=f"{folder}/cert.key")
                fingerprint = self_signed_certificate(security["tls_cert"], security["tls_key"], ["127.0.0.1"])
            credentials = Credentials.load(security["key_file"], tls_fingerprint=fingerprint)
        with ServerProcess(f"{__name__}:TrivialEnv", kwargs, **security) as server:
            transport = _step_round_trips(RemoteEnv(server.address, heartbeat_every=None, credentials=credentials),
                                          n_steps, act_dim)
    return {
        "p50": float(np.percentile(transport, 50)),
        "p99": float(np.percentile(transport, 99)),
        "mean": float(transport.mean()),
        "n": n_steps,
    }


def _step_round_trips(env: RemoteEnv, n_steps: int, act_dim: int) -> np.ndarray:
    """Round trips (ms) of n_steps steps, the server's env step time subtracted."""
    try:
        action = np.zeros(act_dim, np.float32)
        env_ms = []
        env.reset(seed=0)
        for _ in range(n_steps):
            _, _, terminated, truncated, info = env.step(action)
            env_ms.append(info["env_step_ms"])
            if terminated or truncated:
                env.reset()
        return np.asarray(env.latencies_ms) - np.asarray(env_ms)
    finally:
        env.close()


def tag_cost_per_step(obs_dim: int = 24, act_dim: int = 2, repeats: int = 20_000) -> float:
    """Microseconds of authentication work per step: tagging and checking the STEP and its STEP_OK, both sides."""
    key, client_nonce, server_nonce = os.urandom(32), new_nonce(), new_nonce()
    client = session_tags(key, client_nonce, server_nonce, server=False)
    server = session_tags(key, client_nonce, server_nonce, server=True)
    step = pack_body({"type": STEP, "episode": 1, "seq": 1, "action": encode_array(np.zeros(act_dim, np.float32))})
    reply = pack_body({"type": STEP_OK, "episode": 1, "seq": 1, "obs": encode_array(np.zeros(obs_dim, np.float32)),
                       "reward": 0.0, "terminated": False, "truncated": False, "info": {}, "env_ms": 0.01})
    started = time.perf_counter()
    for _ in range(repeats):
        server.open(client.seal(step))
        client.open(server.seal(reply))
    return 1e6 * (time.perf_counter() - started) / repeats
