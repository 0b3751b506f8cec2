"""`make bench`: pretraining against the physics limit, and the wall time to a usable source policy.

Throughput: the task's own training setup (algorithm, envs, workers, hyperparameters) learns for
a fixed number of steps, split into time waiting for the envs, policy inference and bookkeeping
during collection, and gradient updates. Two baselines from the same run: the same vectorized
envs stepped with random actions, and one env per core stepped alone in parallel processes (the
physics limit of the machine). Time to threshold: `train` with its early stop, per seed.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from sim2real import catalog
from sim2real.bench.envs import random_actions, step_through
from sim2real.defaults import EVAL_SEED
from sim2real.factory import make_env
from sim2real.models import build_vec_env, make_model
from sim2real.rollout import evaluate
from sim2real.spec import SOURCE
from sim2real.training import train


class _TimedSteps(VecEnvWrapper):
    """Adds up the wall time the learner spends waiting for the vectorized envs."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        started = time.perf_counter()
        try:
            return self.venv.step_wait()
        finally:
            self.seconds += time.perf_counter() - started

    def step_async(self, actions: Any) -> None:
        started = time.perf_counter()
        self.venv.step_async(actions)
        self.seconds += time.perf_counter() - started


class _UpdateClock(BaseCallback):
    """Wall time between the end of one rollout and the start of the next: the gradient updates."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self._ended = 0.0, None

    def _on_rollout_end(self) -> None:
        self._ended = time.perf_counter()

    def _on_rollout_start(self) -> None:
        if self._ended is not None:
            self.seconds += time.perf_counter() - self._ended

    def _on_training_end(self) -> None:
        self._on_rollout_start()

    def _on_step(self) -> bool:
        return True


def _random_steps_per_second(venv: VecEnv, steps: int, seed: int) -> float:
    """Env steps per wall second of `venv` driven by uniformly random actions."""
    rng = np.random.default_rng(seed)
    venv.reset()
    shape = (venv.num_envs, *venv.action_space.shape)
    started = time.perf_counter()
    for _ in range(max(1, steps // venv.num_envs)):
        venv.step(rng.uniform(-1, 1, size=shape).astype(np.float32))
    return venv.num_envs * max(1, steps // venv.num_envs) / (time.perf_counter() - started)


def _env_alone(task: str, steps: int, seed: int, start: Any, rates: Any) -> None:
    """One process of the physics-limit baseline: build and warm up an env, wait for the others, then time it."""
    env = make_env(task, SOURCE)
    actions = random_actions(env, steps, seed)
    env.reset(seed=seed)
    start.wait()
    started = time.perf_counter()
    step_through(env, actions)
    rates.put(steps / (time.perf_counter() - started))
    env.close()


def physics_limit(task: str, steps: int = 3000, processes: int | None = None) -> float:
    """Env steps per second with one env per core, each in its own process and all stepping at once.

    Each process starts timing when all are ready (start-up left out): what the machine's physics allows.
    """
    processes = processes or os.cpu_count() or 1
    context = multiprocessing.get_context("forkserver")
    start, rates = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_env_alone, args=(task, steps, seed, start, rates)) for seed in range(processes)]
    for worker in workers:
        worker.start()
    total = sum(rates.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join()
    return total


def training_throughput(task: str, algo: str, steps: int, seed: int = 0) -> dict[str, Any]:
    """Training steps per second with the task's setup, where the time goes, and the same envs stepped alone."""
    spec = catalog.load(task)
    config = spec.train.config(algo)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `train` does
    venv = build_vec_env(spec, SOURCE, False, config.n_envs, seed)
    try:
        env_only = _random_steps_per_second(venv, steps, seed)
        timed = _TimedSteps(venv)
        model = make_model(algo, timed, config.hyperparameters, seed)
        model.set_logger(Logger(None, []))
        clock = _UpdateClock()
        started = time.perf_counter()
        model.learn(steps, callback=clock)
        wall = time.perf_counter() - started
    finally:
        venv.close()
        torch.set_num_threads(threads)
    return {
        "task": task,
        "algo": algo,
        "n_envs": config.n_envs,
        "steps": steps,
        "steps_per_second": steps / wall,
        "env_only_steps_per_second": env_only,
        "ratio": steps / wall / env_only,
        "env_wait_share": timed.seconds / wall,
        "update_share": clock.seconds / wall,
        "other_share": max(0.0, 1 - (timed.seconds + clock.seconds) / wall),
    }


def time_to_source_level(task: str, seeds: int = 5, max_steps: int | None = None,
                         check_episodes: int = 100) -> dict[str, Any]:
    """`train` with the task's early stop, once per seed: wall seconds (card left out) and steps to the stop level.

    The policy each seed ends with is then evaluated on `check_episodes` source episodes (the
    card's seeds, untimed): the stop decision rests on 20 episodes, the check on more.
    """
    runs = []
    for seed in range(seeds):
        started = time.perf_counter()
        result = train(task, seed=seed, steps=max_steps, card_episodes=1)
        wall = time.perf_counter() - started - result.card["card_seconds"]
        env = make_env(task, SOURCE)
        check = evaluate(result.model, env, check_episodes, seed=EVAL_SEED)["success_rate"]
        env.close()
        runs.append({"seed": seed, "seconds": round(wall, 1), "steps": result.card["stopped_at_steps"],
                     "last_evaluation": result.history[-1], "source_success": check})
    reached = [run for run in runs if run["steps"] is not None]
    seconds = [run["seconds"] for run in runs]
    level = catalog.load(task).train.stop_at
    return {
        "task": task,
        "stop_at": None if level is None else {level.metric: level.value},
        "runs": runs,
        "reached": len(reached),
        "check_episodes": check_episodes,
        "median_seconds": statistics.median(seconds),
        "worst_seconds": max(seconds),
    }
