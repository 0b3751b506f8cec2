"""Animated GIFs of a policy's episodes on a target, stepped through the one episode loop."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np

from sim2real.episode import Policy, play
from sim2real.factory import make_env
from sim2real.spec import TaskSpec


def record_gif(policy: Policy, task: str | Path | TaskSpec, target: str, path: Path, *, episodes: int = 3,
               seed: int = 0, deterministic: bool = True, every: int = 2) -> Path:
    """Render a few episodes (every `every`-th frame) into an animated GIF."""
    env = make_env(task, target, render_mode="rgb_array")
    frames = []
    try:
        for index in range(episodes):
            frames += _episode_frames(policy, env, seed + index, deterministic, every)
    finally:
        env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = env.metadata.get("render_fps", 25) / every
    iio.imwrite(path, np.stack(frames), duration=1000 / fps, loop=0)
    return path


def _episode_frames(policy: Policy, env: gym.Env, seed: int, deterministic: bool, every: int) -> list[np.ndarray]:
    """Frames of one episode: the reset, every `every`-th step and the last."""
    return [env.render() for index, step in enumerate(play(policy, env, seed, deterministic))
            if index == 0 or index % every == 0 or step.last]
