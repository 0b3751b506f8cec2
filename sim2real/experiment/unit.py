"""One unit of a transfer run, as a worker runs it: adapt, train on the target, evaluate on the step grid.

This module is all a pool or Ray worker imports (not the report's plotting and statistics), so
workers start quickly.
"""

from __future__ import annotations

import io
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from sim2real import zoo
from sim2real.defaults import EVAL_SEED
from sim2real.errors import allowed
from sim2real.experiment.plan import HarnessError, Plan, PolicyBlob, Unit
from sim2real.experiment.run_files import EvaluationRecord
from sim2real.factory import make_env
from sim2real.models import build_vec_env, n_envs_for
from sim2real.provenance import versions
from sim2real.rollout import evaluate
from sim2real.spec import SOURCE
from sim2real.transductive import transduce
from sim2real.transfer import Residual, adapt


class GridEvaluation(BaseCallback):
    """Evaluate during learn() at each grid step t, with the newest weights trained on at most t target steps.

    The weights change only after a rollout (PPO) or a train_freq chunk (SAC): at a rollout's end
    every grid step it passed is evaluated with the weights that collected it, and after the
    update (the next rollout's start, or the end of training) the grid step it ended on.
    """

    def __init__(self, steps: Sequence[int], on_evaluation: Callable[[BaseAlgorithm, int], None]) -> None:
        super().__init__()
        self.pending = deque(steps)
        self.on_evaluation = on_evaluation

    def _flush(self, inclusive: bool) -> None:
        done = self.model.num_timesteps
        while self.pending and (self.pending[0] < done or (inclusive and self.pending[0] == done)):
            self.on_evaluation(self.model, self.pending.popleft())

    def _on_rollout_start(self) -> None:
        self._flush(inclusive=True)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._flush(inclusive=False)

    def _on_training_end(self) -> None:
        self._flush(inclusive=True)


def _record(unit: Unit, steps: int, summary: Mapping[str, Any], episodes: int, wall: float,
            **extra: Any) -> EvaluationRecord:
    return EvaluationRecord(target=unit.target, strategy=unit.strategy.name, seed=unit.seed, steps=steps,
                            success=summary["success_rate"], mean_return=summary["mean_return"], unit=unit.key,
                            episodes=episodes, wall_seconds=round(wall, 3), options=unit.strategy.to_dict(),
                            extra=extra)


@dataclass(frozen=True)
class UnitResult:
    """What a unit sends back to the driver: its records, the trained model's zip (when asked), the worker's versions.

    Nothing is written on the worker, so a unit on another machine needs none of the driver's
    file system; the versions let the driver refuse a unit run with other packages than its own.
    """

    records: list[EvaluationRecord]
    model: bytes | None = None
    versions: dict[str, str] = field(default_factory=versions)


def model_bytes(model: BaseAlgorithm) -> bytes:
    """The SB3 zip of a model, in memory."""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def run_unit(unit: Unit, plan: Plan, keep_model: bool = False) -> UnitResult:
    """Adapt the plan's policy to the unit's target, train `budget` target steps, evaluate on the grid.

    Training runs in this process (DummyVecEnv with the task's n_envs: the pool already uses
    the cores). zero_shot trains nothing: its single evaluation holds at every grid step, since
    the same weights, deterministic actions and episode seeds give the same result. With
    `keep_model`, the trained model's zip comes back with the records.
    """
    started = time.perf_counter()
    eval_env = make_env(plan.spec, unit.target)
    records: list[EvaluationRecord] = []

    def on_evaluation(model: BaseAlgorithm, steps: int) -> None:
        summary = evaluate(model, eval_env, plan.episodes, seed=EVAL_SEED)
        records.append(_record(unit, steps, summary, plan.episodes, time.perf_counter() - started,
                               updates=int(model._n_updates)))

    try:
        pretrained = zoo.load_policy(plan.policy)  # its fit to the source was checked with the plan
        if not unit.strategy.trains:
            summary = evaluate(adapt(pretrained, eval_env, unit.strategy, seed=unit.seed), eval_env, plan.episodes,
                               seed=EVAL_SEED)
            wall = time.perf_counter() - started
            return UnitResult([_record(unit, steps, summary, plan.episodes, wall) for steps in plan.steps])
        if unit.strategy.transductive:
            return _run_transductive(unit, plan, pretrained, eval_env, started, keep_model)
        sac = plan.spec.train.config("sac")
        n_envs = sac.n_envs if isinstance(unit.strategy, Residual) else n_envs_for(plan.spec, pretrained)
        venv = build_vec_env(plan.spec, unit.target, randomize=False, n_envs=n_envs, seed=unit.seed, parallel=False)
        source = make_env(plan.spec, SOURCE) if getattr(unit.strategy, "source_steps", 0) else None
        try:
            model = adapt(pretrained, venv, unit.strategy, seed=unit.seed, sac_hyperparameters=sac.hyperparameters,
                          source_env=source)
            model.set_logger(Logger(None, []))  # silent: no stdout, no tensorboard dir copied from the bundle
            grid = GridEvaluation(plan.steps, on_evaluation)
            model.learn(plan.budget, callback=grid)
            if grid.pending:
                raise HarnessError(f"{unit.key}: training stopped at {model.num_timesteps} steps, before the "
                                   f"evaluations at {allowed(grid.pending)}")
            return UnitResult(records, model_bytes(model) if keep_model else None)
        finally:
            venv.close()
            if source is not None:
                source.close()
    finally:
        eval_env.close()


def _run_transductive(unit: Unit, plan: Plan, pretrained: BaseAlgorithm, eval_env: gym.Env, started: float,
                      keep_model: bool) -> UnitResult:
    """Record on the target, fit the simulator, fine-tune there; evaluate on the grid by target steps used.

    The strategy trains no step on the target: until the grid reaches the recorded steps the
    policy is the pretrained one; from there on it is the one adapted in the fitted simulator.
    """
    transduction = transduce(pretrained, plan.spec, eval_env, unit.strategy, seed=unit.seed)
    used = transduction.target_steps
    before = evaluate(pretrained, eval_env, plan.episodes, seed=EVAL_SEED)
    after = evaluate(transduction.model, eval_env, plan.episodes, seed=EVAL_SEED)
    wall = time.perf_counter() - started
    records = [_record(unit, steps, after if steps >= used else before, plan.episodes, wall, target_steps_used=used)
               for steps in plan.steps]
    return UnitResult(records, model_bytes(transduction.model) if keep_model else None)


def model_path(models_dir: Path, unit_key: str) -> Path:
    """Where a unit's trained model is kept: one zip per unit, named after its key."""
    return Path(models_dir) / (unit_key.replace("/", "__") + ".zip")


@dataclass(frozen=True)
class RunContext:
    """What every unit of a run shares, shipped to the workers once: the plan, the policy's bytes, keep models?"""

    plan: Plan
    policy: PolicyBlob
    keep_models: bool = False


def execute(context: RunContext, unit: Unit) -> UnitResult:
    """Worker entry point: recreate the policy in a temporary directory and run the unit on it."""
    with TemporaryDirectory(prefix="sim2real-unit-") as directory:
        policy = context.policy.write(Path(directory))
        return run_unit(unit, replace(context.plan, policy=str(policy)), context.keep_models)
