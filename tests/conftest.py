"""Shared fixtures and helpers: one torch thread (2-core CI machine, reproducible numbers), tiny policies."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

from sim2real import catalog
from sim2real.training import make_model
from sim2real.zoo import save_bundle


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


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    torch.set_num_threads(1)
