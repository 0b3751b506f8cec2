"""A transfer plan: which policy, targets, strategies, seeds and step budget a run has, checked before any work.

A plan expands into units (target × strategy × seed). Everything that needs no training is
validated here, so a bad plan fails before the budget is spent; `PolicyBlob` carries the
pretrained model's bytes to every unit, local process or Ray worker alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real import catalog, zoo
from sim2real.defaults import EVAL_SEED
from sim2real.errors import Sim2RealError, allowed
from sim2real.experiment.run_files import PlanRecord
from sim2real.factory import make_env
from sim2real.models import n_envs_for
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid import check_budget, check_params, fittable
from sim2real.transfer import STRATEGIES, Strategy, adapt, get_strategy

BASELINE = "scratch"
"""The strategy every gain is measured against: training from scratch on the target."""


class HarnessError(Sim2RealError):
    """A transfer plan or run directory cannot be used as asked: names the bad value and what is accepted."""


@dataclass(frozen=True)
class Unit:
    """One piece of work: adapt the pretrained policy to `target` with `strategy`, trained with `seed`."""

    target: str
    strategy: Strategy
    seed: int

    @property
    def key(self) -> str:
        """A stable name for the unit, stored in each of its records: target/strategy/seed."""
        return f"{self.target}/{self.strategy.name}/{self.seed}"


@dataclass(frozen=True)
class Plan:
    """What a transfer run does: every target × strategy × seed, each with `budget` target steps.

    `policy` is a zoo name, a bundle directory or an SB3 zip; seeds are 0..seeds-1; each unit is
    evaluated with `episodes` episodes at steps 0, eval_every, 2·eval_every, ... and at `budget`.
    """

    spec: TaskSpec
    policy: str
    targets: tuple[str, ...]
    strategies: tuple[Strategy, ...]
    seeds: int
    budget: int
    eval_every: int
    episodes: int

    def __post_init__(self) -> None:
        """Check everything that needs no model, so a bad plan fails before any work."""
        check_schedule(self, "target env")
        if not self.targets:
            raise HarnessError(f"no target given (targets of {self.spec.name}: {allowed(self.spec.targets)})")
        for target in self.targets:
            self.spec.target(target)
        unique("target", self.targets)
        for strategy in self.strategies:
            if not isinstance(strategy, Strategy):
                raise HarnessError(f"expected a Strategy, got {strategy!r} (known strategies: {allowed(STRATEGIES)})")
        names = [strategy.name for strategy in self.strategies]
        unique("strategy", names)
        if BASELINE not in names:
            raise HarnessError(f"the strategies {allowed(names)} lack '{BASELINE}': every gain is measured "
                               f"against it, add it to the strategies")

    @property
    def steps(self) -> tuple[int, ...]:
        """The evaluation grid: 0, eval_every, 2·eval_every, ... and the budget itself."""
        return evaluation_grid(self.budget, self.eval_every)

    def units(self) -> list[Unit]:
        """Every (target, strategy, seed), a seed's strategies together so paired results come early."""
        return [Unit(target, strategy, seed) for target in self.targets for seed in range(self.seeds)
                for strategy in self.strategies]

    def to_record(self, policy_sha256: str, execution: Mapping[str, Any] | None = None) -> PlanRecord:
        """What plan.json holds for this plan, the policy's hash and how this session runs the units added."""
        return schedule_record(self, targets=self.targets, units=tuple(unit.key for unit in self.units()),
                               policy_sha256=policy_sha256, execution=execution)


def schedule_record(plan: Any, **kinds: Any) -> PlanRecord:
    """What every plan records in plan.json (task, policy, strategies, seeds, budget, grid, threshold) and `kinds`."""
    return PlanRecord(task=plan.spec.name, spec_hash=plan.spec.spec_hash, policy=plan.policy,
                      strategies=tuple(strategy.to_dict() for strategy in plan.strategies), seeds=plan.seeds,
                      budget=plan.budget, eval_every=plan.eval_every, episodes=plan.episodes, eval_seed=EVAL_SEED,
                      steps=plan.steps, threshold=plan.spec.threshold, **kinds)


def check_schedule(plan: Any, steps: str) -> None:
    """A plan's seeds, budget, eval_every and episodes: integers >= 1, the budget holding an evaluation."""
    for name, meaning in (("seeds", "training seeds per target and strategy"), ("budget", f"{steps} steps per unit"),
                          ("eval_every", f"{steps} steps between evaluations"),
                          ("episodes", "episodes per evaluation")):
        value = getattr(plan, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HarnessError(f"{name} ({meaning}) must be an integer >= 1, got {value!r}")
    if plan.budget < plan.eval_every:
        raise HarnessError(f"the budget ({plan.budget} steps) is smaller than eval_every ({plan.eval_every}); "
                           f"choose eval_every <= budget, e.g. {max(1, plan.budget // 5)}")


def evaluation_grid(budget: int, eval_every: int) -> tuple[int, ...]:
    """0, eval_every, 2·eval_every, ... and the budget itself."""
    grid = list(range(0, budget + 1, eval_every))
    if grid[-1] != budget:
        grid.append(budget)
    return tuple(grid)


def unique(kind: str, names: Sequence[str]) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise HarnessError(f"{kind} {allowed(repeated)} appears more than once; give each {kind} once")


def make_plan(
    task: str | Path | TaskSpec,
    policy: str | Path,
    targets: str | Sequence[str],
    strategies: Sequence[str | Strategy] | None = None,
    *,
    seeds: int | None = None,
    budget: int | None = None,
    eval_every: int | None = None,
    episodes: int | None = None,
) -> Plan:
    """A validated plan; what is not given comes from the task's `transfer` defaults.

    Without `eval_every`, a given budget keeps the task's number of evaluations (budget / k).
    """
    spec = catalog.load(task)
    defaults = spec.transfer
    if eval_every is None:
        evaluations = max(1, defaults.budget // defaults.eval_every)
        eval_every = defaults.eval_every if budget is None else max(1, budget // evaluations)
    chosen = tuple(defaults.strategies if strategies is None else strategies)
    return Plan(
        spec=spec,
        policy=str(policy),
        targets=(targets,) if isinstance(targets, str) else tuple(targets),
        strategies=tuple(s if isinstance(s, Strategy) else get_strategy(s) for s in chosen),
        seeds=defaults.seeds if seeds is None else seeds,
        budget=defaults.budget if budget is None else budget,
        eval_every=eval_every,
        episodes=defaults.episodes if episodes is None else episodes,
    )


def check_policy(plan: Plan) -> BaseAlgorithm:
    """Load the pretrained policy on the source and prepare it for every target with every strategy, training nothing.

    Catches, before any budget is spent, a policy whose spaces do not fit the task's source (both
    spaces named), a strategy the model cannot take (e.g. freeze_base on a single hidden layer, or
    zero_shot on a target that changes the spaces) and a transductive strategy naming a parameter
    the task cannot fit. Returns the policy as loaded (untouched by the strategies), for the zero-shot gap.
    """
    for strategy in plan.strategies:
        if strategy.transductive:
            if strategy.params is not None:
                check_params(plan.spec, strategy.params)
            check_budget(len(strategy.params or fittable(plan.spec)), strategy.sysid_budget)
    source = make_env(plan.spec, SOURCE)
    try:
        model = zoo.load_policy(plan.policy, source)
        for target in plan.targets:
            env = make_env(plan.spec, target)
            try:
                for strategy in plan.strategies:
                    adapted = adapt(model, env, strategy, source_env=source,
                                    sac_hyperparameters=plan.spec.train.config("sac").hyperparameters)
                    if strategy.trains:
                        check_rollout(plan, strategy, adapted, n_envs_for(plan.spec, model))
            finally:
                env.close()
    finally:
        source.close()
    return model


def check_rollout(plan: Plan, strategy: Strategy, model: Any, n_envs: int) -> None:
    """Refuse a unit whose first update needs more target steps than the budget: it would never learn.

    On-policy (PPO): one rollout of n_steps × n_envs; off-policy (SAC): past `learning_starts`.
    """
    starts = getattr(model, "learning_starts", None)
    if starts is not None and starts >= plan.budget:
        raise HarnessError(f"{strategy.name}: {type(model).__name__} starts updating after learning_starts = "
                           f"{starts:,} target steps, not before the budget ({plan.budget:,}) ends: it would never "
                           f"update; give a budget > {starts:,} or the strategy option learning_starts=N")
    n_steps = getattr(model, "n_steps", None)
    if n_steps is None:
        return
    rollout = n_steps * n_envs
    if rollout > plan.budget:
        raise HarnessError(f"{strategy.name}: {type(model).__name__} collects n_steps × n_envs = {n_steps} × {n_envs} "
                           f"= {rollout:,} target steps before its first update, more than the budget "
                           f"({plan.budget:,}): it would never update; give a budget >= {rollout:,}")


@dataclass(frozen=True)
class PolicyBlob:
    """The pretrained model's bytes and card, shipped with every unit.

    Every unit then adapts exactly the model that plan.json's hash names, even if the file
    changes during the run, and a Ray worker needs no shared filesystem.
    """

    name: str
    model: bytes
    card: Mapping[str, Any] | None

    @classmethod
    def read(cls, policy: str | Path) -> PolicyBlob:
        """Read a zoo name, bundle directory or SB3 zip."""
        path = zoo.resolve(policy)
        if path.is_dir():
            return cls(path.name, (path / zoo.MODEL_FILE).read_bytes(), zoo.load_card(path))
        return cls(path.stem, path.read_bytes(), None)

    @property
    def sha256(self) -> str:
        """A short hash of the model zip, recorded in plan.json."""
        return zoo.model_sha256(self.model)

    def write(self, directory: Path) -> Path:
        """Recreate the policy under `directory`; returns what load_policy takes (bundle dir or zip)."""
        if self.card is None:
            path = directory / zoo.MODEL_FILE
            path.write_bytes(self.model)
            return path
        bundle = directory / self.name
        bundle.mkdir()
        (bundle / zoo.MODEL_FILE).write_bytes(self.model)
        (bundle / "card.json").write_text(json.dumps(self.card))
        return bundle
