"""Pretrain a policy on a task's source domain (nominal or randomized) and write a policy bundle.

Hyperparameters come from the task YAML (``train.<algo>``) and can be overridden; the env runs in
parallel processes; a periodic deterministic evaluation keeps the best weights, which are what the
bundle holds. The same task, algorithm and seed give the same learning curve on one machine.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import sim2real
from sim2real import catalog
from sim2real.catalog import SOURCE, TaskSpec
from sim2real.errors import Sim2RealError
from sim2real.evaluation.rollout import evaluate
from sim2real.factory import make_env
from sim2real.zoo import ALGORITHMS, save_bundle, space_changes

EVAL_SEED = 1_000_000  # evaluation episodes use seeds disjoint from training's


def versions() -> dict[str, str]:
    """Versions of what produced a result, for cards and reports."""
    return {
        "sim2real": sim2real.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def n_envs_for(spec: TaskSpec, model: BaseAlgorithm) -> int:
    """How many envs the task trains the model's algorithm with (PPO's rollout is n_steps × n_envs)."""
    algo = next(name for name, cls in ALGORITHMS.items() if isinstance(model, cls))
    return spec.train.config(algo).n_envs


def build_vec_env(
    spec: TaskSpec, target: str, randomize: bool, n_envs: int, seed: int, parallel: bool | None = None
) -> VecEnv:
    """`n_envs` copies of the task env, in subprocesses when there is more than one core to use."""
    if parallel is None:
        parallel = n_envs > 1 and (os.cpu_count() or 1) > 1
    return make_vec_env(
        make_env,
        n_envs=n_envs,
        seed=seed,
        env_kwargs={"task": spec, "target": target, "randomize": randomize},
        vec_env_cls=SubprocVecEnv if parallel else DummyVecEnv,
    )


class BestCheckpoint(BaseCallback):
    """Every `every` env steps, evaluate deterministically and keep the best weights (success, then return).

    Episode i of each evaluation is reset with seed ``seed + i``.
    """

    def __init__(self, spec: TaskSpec, target: str, every: int, episodes: int,
                 on_eval: Callable[[int, dict[str, Any]], None] | None = None, seed: int = EVAL_SEED) -> None:
        super().__init__()
        self.eval_env = make_env(spec, target)
        self.every, self.episodes, self.on_eval, self.seed = every, episodes, on_eval, seed
        self.best: tuple[float, float] | None = None
        self.best_state: dict[str, Any] | None = None
        self.best_steps = 0
        self.history: list[dict[str, Any]] = []
        self._next = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate_now()
        return True

    def evaluate_now(self) -> None:
        """Evaluate the current weights and remember them if they are the best so far."""
        summary = evaluate(self.model, self.eval_env, self.episodes, seed=self.seed)
        score = (summary["success_rate"], summary["mean_return"])
        self.history.append({"steps": self.num_timesteps, "success": score[0], "return": score[1]})
        self.logger.record("eval/success_rate", score[0])
        self.logger.record("eval/mean_return", score[1])
        if self.best is None or score > self.best:
            self.best, self.best_steps = score, self.num_timesteps
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
        if self.on_eval is not None:
            self.on_eval(self.num_timesteps, summary)

    def _on_training_end(self) -> None:
        self.evaluate_now()
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)
        self.eval_env.close()


@dataclass
class TrainResult:
    """What `train` produced: the model (best weights), its card, and where the bundle went."""

    model: BaseAlgorithm
    card: dict[str, Any]
    directory: Path | None
    history: list[dict[str, Any]]


def make_model(algo: str, env: VecEnv | gymnasium.Env, hyperparameters: Mapping[str, Any], seed: int,
               tensorboard_log: str | None = None) -> BaseAlgorithm:
    """A fresh SB3 model of `algo` with the given constructor keywords."""
    if algo not in ALGORITHMS:
        raise Sim2RealError(f"unknown algorithm '{algo}' (allowed: {', '.join(ALGORITHMS)})")
    try:
        return ALGORITHMS[algo]("MlpPolicy", env, seed=seed, tensorboard_log=tensorboard_log, device="cpu",
                                **hyperparameters)
    except TypeError as exc:
        raise Sim2RealError(f"bad {algo.upper()} hyperparameters {sorted(hyperparameters)}: {exc}") from exc


def train(
    task: str | Path | TaskSpec,
    *,
    target: str = SOURCE,
    randomize: bool = False,
    algo: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    out: Path | None = None,
    n_envs: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    card_episodes: int = 100,
    progress_bar: bool = False,
    tensorboard_log: Path | None = None,
    on_eval: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `algo` on the task's `target` domain and, with `out`, write a bundle evaluated on every target.

    TensorBoard logs go to `tensorboard_log` when given (kept out of the bundle, which ships).
    """
    spec = catalog.load(task)
    spec.target(target)
    algo = algo or spec.train.algo
    config = spec.train.config(algo)
    steps = steps or config.steps
    if steps <= 0:
        raise Sim2RealError(f"--steps must be > 0, got {steps}")
    n_envs = n_envs or config.n_envs
    params = {**config.hyperparameters, **(hyperparameters or {})}
    torch.set_num_threads(1)
    venv = build_vec_env(spec, target, randomize, n_envs, seed)
    model = make_model(algo, venv, params, seed, str(tensorboard_log) if tensorboard_log is not None else None)
    checkpoint = BestCheckpoint(spec, target, eval_every or spec.train.eval_every,
                                eval_episodes or spec.train.eval_episodes, on_eval)
    started = time.perf_counter()
    try:
        model.learn(steps, callback=checkpoint, progress_bar=progress_bar)
    finally:
        venv.close()
    wall = time.perf_counter() - started
    card = {
        "name": out.name if out is not None else f"{spec.name}-{algo}",
        "task": spec.name,
        "task_file": spec.path.name,
        "spec_hash": spec.spec_hash,
        "algo": algo,
        "target": target,
        "randomized": randomize,
        "train_steps": steps,
        "best_at_steps": checkpoint.best_steps,
        "seed": seed,
        "n_envs": n_envs,
        "hyperparameters": _jsonable(params),
        "wall_seconds": round(wall, 1),
        "versions": versions(),
    }
    card.update(score_card(model, spec, card_episodes))
    if out is not None:
        save_bundle(model, out, card)
    return TrainResult(model, card, out, checkpoint.history)


def score_card(model: BaseAlgorithm, spec: TaskSpec, episodes: int) -> dict[str, Any]:
    """Deterministic success and return on the source and zero-shot on every target of the task it can run on.

    A target that changes the observation or action (a new task) is left out: the policy cannot
    act there without adaptation.
    """
    targets: dict[str, Any] = {}
    for name in (SOURCE, *spec.targets):
        env = make_env(spec, name)
        if name != SOURCE and space_changes(model, env):
            env.close()
            continue
        summary = evaluate(model, env, episodes, seed=EVAL_SEED)
        env.close()
        kind = "source" if name == SOURCE else spec.targets[name].kind
        targets[name] = {"kind": kind, "success": summary["success_rate"], "return": round(summary["mean_return"], 3),
                         "episodes": episodes}
    return {"source_success": targets[SOURCE]["success"], "source_return": targets[SOURCE]["return"],
            "eval_episodes": episodes, "eval_seed": EVAL_SEED, "targets": targets}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)
