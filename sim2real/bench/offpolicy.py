"""`make bench`: one residual-SAC transfer unit on one core, split into env steps, gradient updates and the rest.

The unit is the one the README measures: ``residual`` from ``driving-ppo-nominal`` on ``truck``
for 8,000 target steps at its default update-to-data ratio, evaluations left out. The baseline in
the same run is the same number of env steps with random actions (the physics limit of the unit).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from stable_baselines3.common.logger import Logger

from sim2real import catalog, zoo
from sim2real.bench.envs import CpuTimed, env_throughput
from sim2real.factory import make_env
from sim2real.models import build_vec_env
from sim2real.transfer import adapt, get_strategy

TASK, TARGET, POLICY = "driving", "truck", "driving-ppo-nominal"


def measure_residual_unit(steps: int = 8_000, seed: int = 0) -> dict[str, Any]:
    """CPU seconds of one residual unit on one thread: total, inside env.step, inside SAC's updates, the rest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = catalog.load(TASK)
        strategy = get_strategy("residual")
        venv = build_vec_env(spec, TARGET, randomize=False, n_envs=1, seed=seed, parallel=False)
        model = adapt(zoo.load_policy(POLICY), venv, strategy, seed=seed,
                      sac_hyperparameters=spec.train.config("sac").hyperparameters)
        model.set_logger(Logger(None, []))
        env = venv.envs[0]
        stepping = CpuTimed(env.step)
        env.step = stepping
        updating = CpuTimed(model.train)
        model.train = updating
        started = time.process_time()
        model.learn(steps)
        total = time.process_time() - started
        venv.close()
        baseline = steps / env_throughput(lambda: make_env(spec, TARGET), steps, seed)
    finally:
        torch.set_num_threads(threads)
    return {
        "steps": steps,
        "utd": strategy.utd,
        "seconds": round(total, 2),
        "env_seconds": round(stepping.seconds, 2),
        "update_seconds": round(updating.seconds, 2),
        "other_seconds": round(total - stepping.seconds - updating.seconds, 2),
        "env_only_seconds": round(baseline, 2),
        "ratio": round(total / baseline, 1),
    }
