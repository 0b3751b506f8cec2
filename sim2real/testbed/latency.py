"""Round-trip latency of the testbed link, measured against a trivial env in a server subprocess."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.server import ServerProcess


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


def measure_round_trip(n_steps: int = 2000, obs_dim: int = 21, act_dim: int = 2) -> dict[str, float]:
    """p50/p99 (ms) of the STEP round trip over loopback, the server's env step time subtracted."""
    if n_steps < 1:
        raise ValueError(f"n_steps={n_steps}; accepted: an int >= 1")
    kwargs = {"obs_dim": obs_dim, "act_dim": act_dim}
    with ServerProcess(f"{__name__}:TrivialEnv", kwargs) as server:
        env = RemoteEnv(server.address, heartbeat_every=None)
        try:
            action = np.zeros(act_dim, np.float32)
            env_ms = []
            env.reset(seed=0)
            for _ in range(n_steps):
                _, _, terminated, truncated, info = env.step(action)
                env_ms.append(info["env_step_ms"])
                if terminated or truncated:
                    env.reset()
            transport = np.asarray(env.latencies_ms) - np.asarray(env_ms)
        finally:
            env.close()
    return {
        "p50": float(np.percentile(transport, 50)),
        "p99": float(np.percentile(transport, 99)),
        "mean": float(transport.mean()),
        "n": n_steps,
    }
