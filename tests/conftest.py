"""Shared fixtures and helpers: one torch thread (2-core CI machine, reproducible numbers), tiny policies."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from sim2real import catalog
from sim2real.models import make_model
from sim2real.zoo import save_bundle

TINY_PPO_TRAIN = """train:
  algo: ppo
  ppo:
    steps: 512
    n_envs: 1
    hyperparameters: {n_steps: 64, batch_size: 64, n_epochs: 2, policy_kwargs: {net_arch: [16]}}
"""
"""The `train` section of the test tasks: a tiny PPO, one env."""


def write_task(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> Path:
    """A task YAML `name`.yaml holding `text`, in a fresh temporary folder."""
    path = tmp_path_factory.mktemp("task") / f"{name}.yaml"
    path.write_text(text)
    return path


def tiny_pendulum_bundle(task: Path, directory: Path, card: Mapping[str, Any], action_gain: float = 1.0) -> Path:
    """A PPO bundle for a 50-step Pendulum task, trained 128 steps; its action head scaled by `action_gain`."""
    spec = catalog.load(task)
    env = gym.make("Pendulum-v1", max_episode_steps=50)
    model = make_model("ppo", env, spec.train.config().hyperparameters, seed=0).learn(128)
    with torch.no_grad():
        model.policy.action_net.weight.mul_(action_gain)
    return save_bundle(model, directory, dict(card))


class LineReachEnv(gym.Env):
    """Move a point along a line onto a goal within 20 steps; `extra` appends that many copies of the goal's position.

    A task YAML names it ``conftest:LineReachEnv``; a target whose ``task:`` sets `extra` changes the
    observation's size as a changed task does.
    """

    def __init__(self, extra: int = 0, speed: float = 0.2) -> None:
        self.extra, self.speed = extra, speed
        self.observation_space = spaces.Box(-3.0, 3.0, (2 + extra,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _observe(self) -> np.ndarray:
        return np.array([self._position, self._goal - self._position] + [self._goal] * self.extra, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._position, self._goal = self.np_random.uniform(-1.0, 1.0, 2).tolist()
        self._steps = 0
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._position += self.speed * float(np.clip(action[0], -1.0, 1.0))
        self._steps += 1
        distance = abs(self._goal - self._position)
        success = distance < 0.1
        return self._observe(), -distance, success, self._steps >= 20, {"is_success": success}


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    torch.set_num_threads(1)
