"""Gymnasium wrappers: domain randomization and the reality gap (sensor noise, actuator noise, latency).

Each wrapper draws from its own numpy Generator, seeded from ``reset(seed=...)`` through a
SeedSequence with a stream number of its own, so the same seed gives the same episode and SB3's
vectorised envs (seeded seed, seed+1, ...) give every sub-env a different stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from sim2real.adapters import Binder
from sim2real.domain import Distribution, DomainParam, Value, sample_domain


def _stream(seed: int | None, stream: int) -> np.random.Generator:
    """An independent generator for one wrapper's purpose, derived from the episode seed."""
    sequence = np.random.SeedSequence(seed, spawn_key=(stream,)) if seed is not None else np.random.SeedSequence()
    return np.random.default_rng(sequence)


class _Seeded(gym.Wrapper):
    """A wrapper that owns a generator, reseeded whenever reset is given a seed."""

    stream = 0

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.rng = _stream(None, self.stream)

    def _reseed(self, seed: int | None) -> None:
        if seed is not None:
            self.rng = _stream(seed, self.stream)


class DomainWrapper(_Seeded):
    """Applies a domain at every reset: fixed values, plus fresh draws for randomized parameters.

    The values in force are written to ``info["domain"]`` at reset. With an empty randomization
    this is a fixed domain; `scale` narrows (< 1) or widens (> 1) every randomization range.
    """

    stream = 1

    def __init__(
        self,
        env: gym.Env,
        binder: Binder,
        values: Mapping[str, Value],
        randomization: Mapping[str, Distribution] | None = None,
        params: Mapping[str, DomainParam] | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__(env)
        if scale < 0:
            raise ValueError(f"the randomization scale must be >= 0, got {scale}")
        self.binder, self.values = binder, dict(values)
        self.randomization, self.params, self.scale = dict(randomization or {}), dict(params or {}), scale
        self.current: dict[str, Value] = dict(values)
        binder.before_reset(env, self.current)

    @property
    def randomized(self) -> bool:
        """Whether this wrapper draws a new domain every episode."""
        return bool(self.randomization)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self._reseed(seed)
        draws = sample_domain(self.randomization, self.params, self.rng, self.scale) if self.randomization else {}
        self.current = {**self.values, **draws}
        self.binder.before_reset(self.env, self.current)
        obs, info = self.env.reset(seed=seed, options=options)
        self.binder.after_reset(self.env, self.current)
        return obs, {**info, "domain": dict(self.current)}


class ObservationNoise(_Seeded):
    """Adds Gaussian noise (a std per dimension, or one for all) to every observation."""

    stream = 2

    def __init__(self, env: gym.Env, std: float | tuple[float, ...]) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        self.std = np.broadcast_to(np.asarray(std, dtype=np.float64), shape).copy()

    def _noisy(self, obs: np.ndarray) -> np.ndarray:
        space = self.observation_space
        noisy = obs + self.rng.normal(0.0, 1.0, size=obs.shape) * self.std
        return np.clip(noisy, space.low, space.high).astype(space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self._reseed(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._noisy(obs), info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._noisy(obs), reward, terminated, truncated, info


class ActionNoise(_Seeded):
    """Adds Gaussian noise to every action before the env sees it, clipped to the action space."""

    stream = 3

    def __init__(self, env: gym.Env, std: float | tuple[float, ...]) -> None:
        super().__init__(env)
        self.std = np.broadcast_to(np.asarray(std, dtype=np.float64), env.action_space.shape).copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self._reseed(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        space = self.action_space
        noisy = np.asarray(action, dtype=np.float64) + self.rng.normal(0.0, 1.0, size=space.shape) * self.std
        return self.env.step(np.clip(noisy, space.low, space.high).astype(space.dtype))


class ActionDelay(gym.Wrapper):
    """Applies each action `steps` control steps late (latency); the first ones are the neutral action."""

    def __init__(self, env: gym.Env, steps: int) -> None:
        super().__init__(env)
        if steps < 0:
            raise ValueError(f"the action delay must be >= 0 steps, got {steps}")
        self.steps = steps
        space = env.action_space
        self.neutral = np.clip(np.zeros(space.shape), space.low, space.high).astype(space.dtype)
        self.queue: deque[np.ndarray] = deque()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        self.queue = deque([self.neutral.copy() for _ in range(self.steps)])
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        self.queue.append(np.asarray(action, dtype=self.action_space.dtype).copy())
        return self.env.step(self.queue.popleft())
