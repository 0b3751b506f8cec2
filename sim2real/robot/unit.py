"""One strategy adapting on the robot: the actor steps the robot, the learner trains beside it, nothing is lost.

The actor runs training episodes (the one episode loop, :func:`run_episode`) with the newest
weights the learner published, and at each evaluation point checkpoints the learner and evaluates
those weights on the robot (:func:`evaluate`, resumable per episode). Any failure of the link,
the server or this process is recovered the same way (see ``robot.link``): rerunning the same
command resumes from the last checkpoint, the journal's transitions after it, and the step count
exactly as the journal has it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real.defaults import EVAL_SEED
from sim2real.experiment.run_files import EvaluationRecord
from sim2real.factory import make_env
from sim2real.records import write_json_atomic
from sim2real.robot.journal import EVAL, TRAIN, Journal, read_journal
from sim2real.robot.learner import CheckpointState, Learner, read_checkpoint
from sim2real.robot.link import RobotLink
from sim2real.robot.plan import TESTBED_TARGET, RobotPlan, unit_key
from sim2real.rollout import evaluate, run_episode
from sim2real.spec import SOURCE
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.protocol import TestbedError
from sim2real.transfer import Strategy, adapt

JOURNAL_FILE, CHECKPOINT_DIR, EVALUATIONS_DIR, SUMMARY_FILE = "journal.jsonl", "checkpoint", "evaluations", "unit.json"
TRAIN_SEED = 2_000_000  # training episodes' reset seeds (a stand-in uses them; a robot ignores them)


class SpacesOnly(gym.Env):
    """An env that only has spaces: what SB3 builds a model on when the real env is a robot far away."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        raise RuntimeError("SpacesOnly cannot be reset: the model steps the robot through the actor")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        raise RuntimeError("SpacesOnly cannot be stepped: the model steps the robot through the actor")


class ActorPolicy:
    """The actor's copy of the policy: takes the learner's newest weights between steps, or holds one set."""

    def __init__(self, model: BaseAlgorithm, learner: Learner | None) -> None:
        self.policy = copy.deepcopy(model.policy)
        self.policy.set_training_mode(False)
        self.learner = learner
        self.version = 0
        self.held = False

    def hold(self, weights: dict[str, torch.Tensor]) -> None:
        """Act with `weights` (a checkpoint's) until :meth:`follow`: an evaluation's weights stay fixed."""
        self.policy.actor.load_state_dict(weights)
        self.held = True

    def follow(self) -> None:
        """Take the learner's newest weights again."""
        self.held = False

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, None]:
        """SB3's predict, after swapping in newer weights (between steps, never during one)."""
        if not self.held and self.learner is not None:
            version, weights = self.learner.weights()
            if version != self.version and weights is not None:
                self.policy.actor.load_state_dict(weights)
                self.version = version
        return self.policy.predict(observation, deterministic=deterministic)


@dataclass
class UnitRun:
    """A unit's settings beside the plan: where it lives and how it reaches the robot."""

    plan: RobotPlan
    strategy: Strategy
    seed: int
    directory: Path
    credentials: Credentials | None = None
    reconnect_timeout: float = 120.0
    step_timeout: float = 2.0

    @property
    def key(self) -> str:
        """target/strategy/seed, as in results.jsonl."""
        return unit_key(self.strategy, self.seed)


def run_robot_unit(run: UnitRun, pretrained: BaseAlgorithm, done_steps: set[int],
                   on_record: Callable[[EvaluationRecord], None]) -> dict[str, Any]:
    """Train and evaluate one unit on the robot (resuming what its directory holds); returns its summary.

    `done_steps` are the grid steps whose evaluation is in results.jsonl already; `on_record` is
    called with each new evaluation record as it completes.
    """
    plan, directory = run.plan, run.directory
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    state = read_journal(directory / JOURNAL_FILE)
    counts = dict(state.steps)
    journal = Journal(directory / JOURNAL_FILE)
    learner: Learner | None = None
    link = RobotLink(plan.address, pretrained, journal, counts, session=state.session, on_transition=None,
                     cut_now=lambda: counts[TRAIN] in plan.steps,
                     reconnect_timeout=run.reconnect_timeout, max_delta=plan.max_delta,
                     credentials=run.credentials, step_timeout=run.step_timeout)
    try:
        checkpoint = read_checkpoint(directory / CHECKPOINT_DIR) if run.strategy.trains else None
        model = _model(run, pretrained, SpacesOnly(pretrained.observation_space, pretrained.action_space), checkpoint)
        actor = ActorPolicy(model, None)
        restored_at = None if checkpoint is None else checkpoint.consumed
        if run.strategy.trains:
            restored = {name: value.clone() for name, value in model.policy.actor.state_dict().items()}
            learner = actor.learner = _learner(run, model, state.transitions, checkpoint, journal)
            link.on_transition = learner.put
            learner.start()
        link.open(first=state.session is None)  # a fresh run fails at once; a resumed one waits for the robot
        link.resolve(state.pending)
        resets = state.resets[TRAIN]
        while True:
            try:
                if learner is not None:
                    learner.raise_failure()  # never step the robot with weights that stopped learning
                step = counts[TRAIN]
                if step in plan.steps and step not in done_steps:
                    if learner is not None:  # the checkpoint's weights; a resumed evaluation reuses them exactly
                        actor.hold(restored if step == restored_at else learner.checkpoint(step))
                    record = _evaluate_point(run, link, actor, learner, step, started, counts)
                    points = [step] if run.strategy.trains else plan.steps  # unchanged weights: one evaluation
                    for point in points:
                        if point not in done_steps:
                            on_record(replace(record, steps=point))
                            done_steps.add(point)
                    continue
                if step >= plan.budget or not run.strategy.trains:
                    break
                run_episode(actor, link.train_env, seed=TRAIN_SEED + 10_000 * run.seed + resets, deterministic=False)
                resets += 1
            except TestbedError as failure:
                link.recover(failure, link.pending())
        return _summary(run, link, learner, started)
    finally:
        if learner is not None:
            learner.stop()
            learner.join(30)
        link.close()
        journal.close()


def _model(run: UnitRun, pretrained: BaseAlgorithm, spaces: SpacesOnly,
           checkpoint: CheckpointState | None) -> BaseAlgorithm:
    """The strategy's model, restored from the unit's checkpoint when there is one."""
    spec = run.plan.spec
    source = make_env(spec, SOURCE) if getattr(run.strategy, "source_steps", 0) else None
    try:
        model = adapt(pretrained, spaces, run.strategy, seed=run.seed,
                      sac_hyperparameters=spec.train.config("sac").hyperparameters, source_env=source)
    finally:
        if source is not None:
            source.close()
    if checkpoint is None:
        return model
    restored = type(model).load(run.directory / CHECKPOINT_DIR / checkpoint.model, device="cpu")
    restored.replay_buffer = model.replay_buffer  # holds any source warm start; the journal's steps follow
    return restored


def _learner(run: UnitRun, model: BaseAlgorithm, transitions: list[Any], checkpoint: CheckpointState | None,
             journal: Journal) -> Learner:
    """A learner resuming at the checkpoint: its transitions re-added, the later ones queued as new."""
    consumed = 0 if checkpoint is None else checkpoint.consumed
    owed = 0 if checkpoint is None else checkpoint.owed
    utd = max(1, int(model.gradient_steps) // max(1, int(model.train_freq.frequency)))
    learner = Learner(model, utd, run.plan.budget, run.directory / CHECKPOINT_DIR, consumed=consumed, owed=owed,
                      before_checkpoint=journal.fsync)
    learner.add_consumed(transitions[:consumed])
    for transition in transitions[consumed:]:
        learner.put(transition)
    return learner


def _evaluate_point(run: UnitRun, link: RobotLink, actor: ActorPolicy, learner: Learner | None, step: int,
                    started: float, counts: dict[str, int]) -> EvaluationRecord:
    """Evaluate the held weights on the robot at `step` (resuming finished episodes); the results record."""
    out = run.directory / EVALUATIONS_DIR / str(step)
    summary = evaluate(actor, link.eval_env, run.plan.episodes, seed=EVAL_SEED, out=out)
    actor.follow()
    hz = link.control_hz
    return EvaluationRecord(
        target=TESTBED_TARGET, strategy=run.strategy.name, seed=run.seed, steps=step, success=summary["success_rate"],
        mean_return=summary["mean_return"], unit=run.key, episodes=run.plan.episodes,
        wall_seconds=round(time.perf_counter() - started, 3), options=run.strategy.to_dict(), extra={
            "robot_steps": {"train": counts[TRAIN], "eval": counts[EVAL]},
            "robot_minutes": None if not hz else {phase: round(counts[phase] / hz / 60, 3) for phase in (TRAIN, EVAL)},
            "updates": None if learner is None else learner.total_updates,
            "update_debt": None if learner is None else learner.owed,
        })


def _summary(run: UnitRun, link: RobotLink, learner: Learner | None, started: float) -> dict[str, Any]:
    """Robot time, the step rate kept against the control rate, the time the robot stood still; in unit.json."""
    state = read_journal(run.directory / JOURNAL_FILE)
    hz = link.control_hz
    rate = state.stepping_count / state.stepping_seconds if state.stepping_seconds > 0 else None
    steps = state.steps[TRAIN] + state.steps[EVAL]
    summary = {
        "unit": run.key,
        "robot_steps": dict(state.steps),
        "control_hz": hz,
        "robot_minutes": None if not hz else {phase: round(count / hz / 60, 3) for phase, count in state.steps.items()},
        "step_rate_hz": None if rate is None else round(rate, 3),
        "rate_kept": None if not (hz and rate) else round(rate / hz, 4),
        "span_seconds": round(state.span_seconds, 3),
        "stood_still_seconds": None if not hz else round(max(0.0, state.span_seconds - steps / hz), 3),
        "updates": None if learner is None else learner.total_updates,
        "update_debt": None if learner is None else learner.owed,
        "recoveries": link.recoveries,
        "wall_seconds_this_run": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(run.directory / SUMMARY_FILE, summary)
    return summary
