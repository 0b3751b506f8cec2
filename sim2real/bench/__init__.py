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
- one residual-SAC transfer unit of 8,000 target steps on one core, vs the same env steps alone;
- the fit of `sim2real adapt` (10 warehouse episodes, the default budget) on every core vs one, same values.
"""

from __future__ import annotations

from typing import Any

from sim2real.bench.envs import env_step_cost, env_throughput
from sim2real.bullet.driving import DrivingEnv
from sim2real.bullet.grasping import GraspingEnv

TRAINING_TASKS = ("driving", "grasping")


def run_all(harness: bool = True, offpolicy: bool = True, training: bool = True,
            pretraining_seeds: int = 5, fit: bool = True) -> dict[str, Any]:
    """Run every benchmark and return the numbers (the CLI prints them as a table)."""
    from sim2real.bench.latency import LINKS, measure_round_trip, tag_cost_per_step

    results: dict[str, Any] = {
        "driving": env_step_cost(DrivingEnv),
        "grasping": {**env_step_cost(GraspingEnv), "throughput_with_resets": env_throughput(GraspingEnv)},
        "testbed": {link: measure_round_trip(n_steps=3000, obs_dim=24, act_dim=2, link=link) for link in LINKS},
        "auth_us_per_step": tag_cost_per_step(obs_dim=24, act_dim=2),
    }
    if training:
        from sim2real.bench.training import physics_limit, time_to_source_level, training_throughput

        results["training"] = {
            task: {"physics_limit": physics_limit(task), "ppo": training_throughput(task, "ppo", 8192),
                   "sac": training_throughput(task, "sac", 3000)}
            for task in TRAINING_TASKS
        }
        if pretraining_seeds:
            results["pretraining"] = {task: time_to_source_level(task, pretraining_seeds) for task in TRAINING_TASKS}
    if harness:
        from sim2real.bench.harness import measure_speedup

        results["harness"] = {budget: measure_speedup(units=4, budget=budget) for budget in (8192, 32768)}
    if offpolicy:
        from sim2real.bench.offpolicy import measure_residual_unit

        results["offpolicy"] = measure_residual_unit()
    if fit:
        from sim2real.bench.sysid import measure_fit_speedup

        results["fit"] = measure_fit_speedup()
    return results
