"""A robot transfer plan: which policy adapts on which testbed, with which strategies, budget and evaluations.

Everything that needs no robot is checked here, before the robot moves: the strategies can run
against a remote env (off-policy ones; on-policy PPO and the simulator-fitting strategies
cannot), the budget holds an evaluation, the numbers are integers >= 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim2real import catalog
from sim2real.checks import check_positive
from sim2real.experiment.plan import HarnessError, check_schedule, evaluation_grid, schedule_record, unique
from sim2real.experiment.run_files import PlanRecord
from sim2real.spec import TaskSpec
from sim2real.transfer import Residual, Strategy, get_strategy

TESTBED_TARGET = "testbed"
"""The target name a robot run's units and records carry."""


@dataclass(frozen=True)
class RobotPlan:
    """Adapt `policy` on the testbed at `address`: each strategy × seed trains `budget` robot steps.

    Each unit is evaluated on the robot with `episodes` episodes at steps 0, eval_every, ... and
    at `budget`; evaluation steps are robot time too, and are counted as such.
    """

    spec: TaskSpec
    policy: str
    address: str
    strategies: tuple[Strategy, ...]
    seeds: int
    budget: int
    eval_every: int
    episodes: int
    max_delta: float | None = None

    def __post_init__(self) -> None:
        """Check what needs no robot, so a bad plan fails before the robot moves."""
        check_schedule(self, "robot")
        if self.max_delta is not None:
            check_positive("max_delta", self.max_delta, "largest action change per step; leave it out for no limit")
        if not self.strategies:
            raise HarnessError("no strategy given; on a robot, residual is the one to try first")
        unique("strategy", [strategy.name for strategy in self.strategies])

    @property
    def steps(self) -> tuple[int, ...]:
        """The evaluation grid: 0, eval_every, 2·eval_every, ... and the budget itself."""
        return evaluation_grid(self.budget, self.eval_every)

    def units(self) -> list[tuple[Strategy, int]]:
        """Every (strategy, seed), a seed's strategies together."""
        return [(strategy, seed) for seed in range(self.seeds) for strategy in self.strategies]

    def to_record(self, policy_sha256: str) -> PlanRecord:
        """What plan.json holds for this plan (the harness's fields, plus the testbed's) and the policy's hash."""
        return schedule_record(self, testbed=self.address, targets=(TESTBED_TARGET,), max_delta=self.max_delta,
                               units=tuple(unit_key(strategy, seed) for strategy, seed in self.units()),
                               policy_sha256=policy_sha256)


def unit_key(strategy: Strategy, seed: int) -> str:
    """The unit's key, as the harness spells it: target/strategy/seed."""
    return f"{TESTBED_TARGET}/{strategy.name}/{seed}"


def runs_remotely(strategy: Strategy, algorithm: str) -> str | None:
    """Why `strategy` on an `algorithm` policy cannot train against a remote env, or None when it can."""
    if strategy.transductive:
        return (f"{strategy.name} fits a simulator to recorded episodes and trains there; it needs the target as a "
                f"local env")
    if not strategy.trains or isinstance(strategy, Residual):
        return None
    if algorithm != "SAC":
        return (f"{strategy.name} on a {algorithm} policy trains on-policy: it needs whole rollouts from the "
                f"current policy and cannot learn beside a robot stepping at its own rate; use residual "
                f"(off-policy, starts at the pretrained behaviour) or a SAC policy")
    return None


def make_robot_plan(task: str | TaskSpec, policy: str, address: str, strategies: Sequence[str | Strategy], *,
                    algorithm: str, seeds: int = 1, budget: int = 8000, eval_every: int = 2000, episodes: int = 20,
                    max_delta: float | None = None) -> RobotPlan:
    """A validated robot plan; `algorithm` is the policy's (``"PPO"`` or ``"SAC"``), for the strategy check."""
    spec = catalog.load(task) if not isinstance(task, TaskSpec) else task
    chosen = tuple(s if isinstance(s, Strategy) else get_strategy(s) for s in strategies)
    for strategy in chosen:
        reason = runs_remotely(strategy, algorithm)
        if reason is not None:
            raise HarnessError(f"{strategy.name} cannot run against a remote env: {reason}")
    return RobotPlan(spec, str(policy), address, chosen, seeds, budget, eval_every, episodes, max_delta)
