"""The env benchmarks and what the others share: a step's cost against its raw physics, steps per second, CPU time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def env_step_cost(env_class: type, steps: int = 3000, seed: int = 0) -> dict[str, Any]:
    """CPU time per env step (resets excluded) vs the time spent inside the stepSimulation calls it makes."""
    env = env_class()
    env.reset(seed=seed)
    physics = CpuTimed(env.client.stepSimulation)
    env.client.stepSimulation = physics  # an instance attribute wins over BulletClient's __getattr__
    actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, *env.action_space.shape))
    step_seconds = 0.0
    for action in actions:
        started = time.process_time()
        _, _, terminated, truncated, _ = env.step(action)
        step_seconds += time.process_time() - started
        if terminated or truncated:
            before_reset = physics.seconds
            env.reset()
            physics.seconds = before_reset  # resets are not steps: leave their physics out
    env.close()
    return {
        "env_us_per_step": 1e6 * step_seconds / steps,
        "raw_us_per_step": 1e6 * physics.seconds / steps,
        "ratio": step_seconds / physics.seconds,
        "steps_per_second": steps / step_seconds,
        "control_hz": 1 / env.dt,
    }


class CpuTimed:
    """Wraps a callable and adds up the CPU time spent inside it."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call, self.seconds = call, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return self.call(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - started


def random_actions(env: Any, steps: int, seed: int) -> np.ndarray:
    """`steps` uniformly random actions in [-1, 1] for `env`, from a seeded generator."""
    return np.random.default_rng(seed).uniform(-1, 1, size=(steps, *env.action_space.shape))


def step_through(env: Any, actions: np.ndarray) -> None:
    """Step `env` through `actions`, resetting it whenever an episode ends."""
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()


def env_throughput(make: Callable[[], Any], steps: int = 3000, seed: int = 0) -> float:
    """Env steps per CPU second with random actions, resets included; ``make`` builds the env (an env class will do)."""
    env = make()
    env.reset(seed=seed)
    actions = random_actions(env, steps, seed)
    started = time.process_time()
    step_through(env, actions)
    seconds = time.process_time() - started
    env.close()
    return steps / seconds
