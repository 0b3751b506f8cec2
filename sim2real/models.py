"""SB3 models and their vectorized envs for a task: a fresh model, the envs it trains on, how many it had."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import gymnasium
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sim2real.env_group import SeededEnvFactory
from sim2real.errors import Sim2RealError
from sim2real.factory import make_env
from sim2real.spec import TaskSpec
from sim2real.vec_env import WorkerVecEnv
from sim2real.zoo import ALGORITHMS, algorithm_class


def make_model(algo: str, env: VecEnv | gymnasium.Env, hyperparameters: Mapping[str, Any], seed: int,
               tensorboard_log: str | None = None) -> BaseAlgorithm:
    """A fresh SB3 model of `algo` with the given constructor keywords."""
    if algo not in ALGORITHMS:
        raise Sim2RealError(f"unknown algorithm '{algo}' (allowed: {', '.join(ALGORITHMS)})")
    try:
        return algorithm_class(algo)("MlpPolicy", env, seed=seed, tensorboard_log=tensorboard_log, device="cpu",
                                **copy.deepcopy(dict(hyperparameters)))  # SB3 adds keys to policy_kwargs
    except TypeError as exc:
        raise Sim2RealError(f"bad {algo.upper()} hyperparameters {sorted(hyperparameters)}: {exc}") from exc


def n_envs_for(spec: TaskSpec, model: BaseAlgorithm) -> int:
    """How many envs the model was trained with (PPO's rollout is n_steps × n_envs); the task's for a fresh model.

    Fine-tuning keeps the pretrained model's own rollout shape, so retuning a task's pretraining
    does not silently change transfer experiments on policies trained before it.
    """
    if getattr(model, "n_envs", None):
        return int(model.n_envs)
    algo = next(name for name in ALGORITHMS if isinstance(model, algorithm_class(name)))
    return spec.train.config(algo).n_envs


def build_vec_env(
    spec: TaskSpec, target: str, randomize: bool, n_envs: int, seed: int, parallel: bool | None = None
) -> VecEnv:
    """`n_envs` copies of the task env, seeded as SB3's ``make_vec_env`` does (env i: seed + i).

    With more than one core they run in one group per core (`WorkerVecEnv`): the first group in
    this process, each other in a worker process; all in this process otherwise. Both give the
    same episodes.
    """
    if parallel is None:
        parallel = n_envs > 1 and (os.cpu_count() or 1) > 1
    factories = [SeededEnvFactory(partial(make_env, spec, target, randomize=randomize), seed + rank)
                 for rank in range(n_envs)]
    venv = WorkerVecEnv(factories) if parallel else DummyVecEnv(factories)
    venv.seed(seed)
    return venv
