"""Benchmarks for `make bench`: each prints a ratio against a baseline measured in the same run.

- driving env step vs the raw ``stepSimulation`` calls it makes (target ≤ 1.25×);
- grasping env steps per second on one core at its control rate (target ≥ 2,000/s), and vs raw physics;
- testbed round trip over loopback, the env's own step time excluded (target p50 ≤ 0.3 ms, p99 ≤ 1 ms),
  without a key, with a key, with a key inside TLS; and the authentication work per step (target ≤ 10 µs);
- pretraining: PPO and SAC training steps per second, per task, vs the physics limit (one env per
  core in parallel processes; PPO target ≥ 50 %), and the wall time to the task's source level over
  5 seeds (driving ≤ 30 s, grasping ≤ 60 s);
- the transfer harness with 2 workers vs 1 on four 8k-step driving units (target ≥ 1.7×) and four
  32k-step ones (target ≥ 1.85×);
- one residual-SAC transfer unit of 8,000 target steps on one core, vs the same env steps alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim2real.bullet.driving import DrivingEnv
from sim2real.bullet.grasping import GraspingEnv


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


TRAINING_TASKS = ("driving", "grasping")


def run_all(harness: bool = True, offpolicy: bool = True, training: bool = True,
            pretraining_seeds: int = 5) -> dict[str, Any]:
    """Run every benchmark and return the numbers (the CLI prints them as a table)."""
    from sim2real.testbed.latency import LINKS, measure_round_trip, tag_cost_per_step

    results: dict[str, Any] = {
        "driving": env_step_cost(DrivingEnv),
        "grasping": {**env_step_cost(GraspingEnv), "throughput_with_resets": env_throughput(GraspingEnv)},
        "testbed": {link: measure_round_trip(n_steps=3000, obs_dim=24, act_dim=2, link=link) for link in LINKS},
        "auth_us_per_step": tag_cost_per_step(obs_dim=24, act_dim=2),
    }
    if training:
        from sim2real.evaluation.bench_training import physics_limit, time_to_source_level, training_throughput

        results["training"] = {
            task: {"physics_limit": physics_limit(task), "ppo": training_throughput(task, "ppo", 8192),
                   "sac": training_throughput(task, "sac", 3000)}
            for task in TRAINING_TASKS
        }
        if pretraining_seeds:
            results["pretraining"] = {task: time_to_source_level(task, pretraining_seeds) for task in TRAINING_TASKS}
    if harness:
        from sim2real.evaluation.bench_harness import measure_speedup

        results["harness"] = {budget: measure_speedup(units=4, budget=budget) for budget in (8192, 32768)}
    if offpolicy:
        from sim2real.evaluation.bench_offpolicy import measure_residual_unit

        results["offpolicy"] = measure_residual_unit()
    return results
