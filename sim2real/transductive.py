"""Transductive transfer: adapt a pretrained policy to a target that gives observations and actions, no reward.

The loop (after SimOpt, Chebotar et al. 2019): record episodes on the target with the current
policy, identify the simulator's domain parameters from every recording so far
(:mod:`sim2real.sysid`), fine-tune the policy in the fitted simulator (with randomization around
the fit), and repeat with the fine-tuned policy; then run it on the target. Only the recorded
episodes use the target; the training steps are simulated, so the target cost of the strategy
is the recorded steps.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger

from sim2real import catalog, sysid
from sim2real.checkpoint import BestCheckpoint
from sim2real.checks import check_count, check_seed
from sim2real.defaults import EVAL_SEED
from sim2real.formatting import count
from sim2real.models import build_vec_env, n_envs_for
from sim2real.policy_evaluation import evaluate_policy
from sim2real.records import write_json_atomic
from sim2real.rundir import RunRecord, claim_folder
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid import FITTED_TARGET, Fit, Trajectory
from sim2real.target_env import open_target
from sim2real.transfer import SysidFinetune, adapt
from sim2real.transfer.strategies import MAX_RECORDED_PER_SEED
from sim2real.zoo import load_policy, policy_sha256, save_model_atomic

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials

RECORD_SEED = 2_000_000
"""First reset seed of recorded episodes: apart from the evaluation seeds (1,000,000 + i) and training seeds."""

SELECTION_SEED = 3_000_000
"""First reset seed of the simulated episodes that pick the best fine-tuned weights (not the evaluation seeds)."""


@dataclass
class Transduction:
    """The adapted model, the episodes it was fitted to, the fit and the fitted task."""

    model: BaseAlgorithm
    trajectories: list[Trajectory]
    fit: Fit
    fitted: TaskSpec

    @property
    def target_steps(self) -> int:
        """Target steps the adaptation used: the recorded episodes' steps, no training step."""
        return sysid.recorded_steps(self.trajectories)


def record_seed(seed: int, episodes: int, round_index: int = 0) -> int:
    """First reset seed of a round's recorded episodes for training seed `seed`: each seed and round its own."""
    return RECORD_SEED + seed * MAX_RECORDED_PER_SEED + round_index * episodes


def record_on_target(policy: BaseAlgorithm, target: gym.Env, strategy: SysidFinetune, seed: int = 0,
                     round_index: int = 0) -> list[Trajectory]:
    """Record one round's episodes of `policy` on the target (deterministic actions)."""
    first = record_seed(seed, strategy.episodes, round_index)
    return [sysid.record_episode(policy, target, first + i) for i in range(strategy.episodes)]


def adapt_in_fitted_sim(pretrained: BaseAlgorithm, task: str | TaskSpec, trajectories: Sequence[Trajectory],
                        strategy: SysidFinetune, seed: int = 0, workers: int = 1) -> Transduction:
    """Fit the task's simulator to `trajectories`, then fine-tune `pretrained` there as `strategy` says.

    With `workers` > 1 the fit's replays spread over that many processes (the same fit as in one,
    see :mod:`sim2real.sysid.scoring`); a harness unit, one of several side by side, keeps to one.
    The fine-tuning's envs stay in this process: with the zoo policies' 8 envs and small PPO
    minibatches the updates take most of the time, and env groups in two processes measured
    slower (49 s against 41 s for 24k steps on the warehouse fit).

    The pretrained model is left untouched; the returned one has trained `strategy.sim_steps`
    simulated steps (seeded with `seed`) on the fitted target, randomized around the fit when
    `strategy.randomize` is on, and holds the best weights of periodic evaluations in the fitted
    simulator (the task's transfer `eval_every` and `episodes`, on seeds apart from the target's
    evaluation seeds): PPO on a hard target can collapse after reaching it, and the simulator's
    reward is free to use.
    """
    spec = catalog.load(task)
    params = list(strategy.params) if strategy.params is not None else sysid.fittable(spec)
    fit = sysid.identify(spec, list(trajectories), params, budget=strategy.sysid_budget, seed=seed,
                         horizon=strategy.horizon, workers=workers)
    fitted = catalog.parse(sysid.fitted_task(spec, fit), source=f"{spec.name} fitted by sysid")
    venv = build_vec_env(fitted, FITTED_TARGET, randomize=strategy.randomize,
                         n_envs=n_envs_for(fitted, pretrained), seed=seed, parallel=False)
    try:
        model = adapt(pretrained, venv, strategy, seed=seed)
        model.set_logger(Logger(None, []))
        best = BestCheckpoint(fitted, FITTED_TARGET, every=spec.transfer.eval_every,
                              episodes=spec.transfer.episodes, seed=SELECTION_SEED)
        model.learn(strategy.sim_steps, callback=best)
    finally:
        venv.close()
    return Transduction(model, list(trajectories), fit, fitted)


def transduce(pretrained: BaseAlgorithm, task: str | TaskSpec, target: gym.Env, strategy: SysidFinetune,
              seed: int = 0) -> Transduction:
    """The whole loop on one target env: `strategy.rounds` rounds of record, identify, fine-tune."""
    trajectories: list[Trajectory] = []
    policy = pretrained
    for round_index in range(strategy.rounds):
        trajectories += record_on_target(policy, target, strategy, seed, round_index)
        result = adapt_in_fitted_sim(policy, task, trajectories, strategy, seed)
        policy = result.model
    return result


def run_loop(policy: str | Path, task: str | Path | TaskSpec, out: str | Path, *, strategy: SysidFinetune,
             target: str = "real", testbed: str | None = None, eval_episodes: int = 100, seed: int = 0,
             on_stage: Callable[[str], None] | None = None, credentials: Credentials | None = None,
             force: bool = False, workers: int | None = None) -> dict[str, Any]:
    """Record on the target (a local target or the testbed at `testbed`), identify, fine-tune; then evaluate.

    Everything lands in `out` as it is made, and a rerun resumes. Round k writes ``round-k/``:
    ``rollouts.jsonl`` (its recorded episodes, appended and fsynced one by one; a rerun records
    only the missing ones), ``sysid/`` (the fit to every episode recorded so far, its report and
    the fitted task YAML) and ``adapted.zip`` (the policy fine-tuned in that round; a rerun keeps
    it). Then ``eval-pretrained/`` and ``eval-adapted/`` (episodes on the target) and
    ``summary.json``. No target reward is used to adapt: the two evaluations are the only place
    success on the target is measured. `credentials`: the testbed's key and TLS check. A rerun
    into `out` resumes only the same run (policy, task, target, strategy, seeds); another is
    refused unless `force`, which replaces it. When the adapted policy scores below the pretrained
    one, the summary recommends the pretrained one. The fit's replays use `workers` processes
    (None: one per core), with the same fit for any number.
    """
    spec = catalog.load(task)
    spec.target(target)
    if isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int) or eval_episodes < 1:
        raise sysid.SysIdError(f"eval_episodes must be an integer >= 1, got {eval_episodes!r}")
    if strategy.params is not None:
        sysid.check_params(spec, strategy.params)
    sysid.check_budget(len(strategy.params or sysid.fittable(spec)), strategy.sysid_budget)
    check_seed(seed)
    workers = os.cpu_count() or 1 if workers is None else check_count("workers", workers,
                                                                      meaning="processes replaying candidates")
    out = Path(out)
    run = RunRecord("adapt", {"policy": str(policy), "policy_sha256": policy_sha256(policy), "task": spec.name,
                              "task_hash": spec.spec_hash, "target": "testbed" if testbed else target,
                              "strategy": strategy.to_dict(), "eval_episodes": eval_episodes, "seed": seed})
    rounds = [path.name for path in out.glob("round-*")] if out.is_dir() else []
    claim_folder(out, run, [*sorted(rounds), "eval-pretrained", "eval-adapted", "summary.json"], force=force)
    stage = on_stage or (lambda _message: None)
    where = f"the testbed at {testbed}" if testbed else f"target {target!r}"

    current = load_policy(policy)
    trajectories: list[Trajectory] = []
    for number in range(1, strategy.rounds + 1):
        folder = out / f"round-{number}"
        adapted = folder / "adapted.zip"
        stage(f"round {number}: recording {count(strategy.episodes, 'episode')} on {where}")
        trajectories += _record_missing(current, spec, target, testbed, folder / "rollouts.jsonl", strategy, seed,
                                        number - 1, credentials)
        if adapted.exists():
            stage(f"round {number}: {adapted} exists: kept (delete it to adapt again)")
            fit = sysid.read_fit(folder / "sysid" / "fit.json")
            current = load_policy(adapted)
            continue
        stage(f"round {number}: fitting the simulator to {len(trajectories)} episodes, fine-tuning "
              f"{strategy.sim_steps:,} steps in it")
        result = adapt_in_fitted_sim(current, spec, trajectories, strategy, seed,
                                     workers=workers)
        fit, current = result.fit, result.model
        sysid.write_fit(fit, spec, trajectories, folder / "sysid")
        save_model_atomic(current, adapted)

    summaries = {}
    for name, evaluated in (("pretrained", policy), ("adapted", adapted)):
        stage(f"evaluating the {name} policy on {where} ({eval_episodes} episodes)")
        local_target = target if testbed is None else SOURCE  # on a testbed the robot is the target
        summaries[name] = evaluate_policy(evaluated, spec, target=local_target, episodes=eval_episodes, seed=EVAL_SEED,
                                          testbed=testbed, out=out / f"eval-{name}", credentials=credentials)
    summary = {
        "task": spec.name, "target": target, "testbed": testbed, "policy": str(policy),
        "adapted_policy": str(adapted), "strategy": strategy.to_dict(),
        "target_steps_used": sysid.recorded_steps(trajectories),
        "fit": fit.values, "action_delay_steps": fit.action_delay_steps,
        "success": {name: s["success_rate"] for name, s in summaries.items()},
        "success_ci": {name: s.get("success_ci") for name, s in summaries.items()},
        "gain_points": round(100 * (summaries["adapted"]["success_rate"] - summaries["pretrained"]["success_rate"]), 1),
    }
    summary["recommended"] = "adapted" if summary["gain_points"] >= 0 else "pretrained"
    write_json_atomic(out / "summary.json", summary)
    return summary


def _record_missing(policy: BaseAlgorithm, spec: TaskSpec, target: str, testbed: str | None, path: Path,
                    strategy: SysidFinetune, seed: int, round_index: int,
                    credentials: Credentials | None) -> list[Trajectory]:
    """A round's episodes in the rollout file at `path`, recording with `policy` only those not there yet."""
    have = sysid.load_trajectories(path, spec) if path.exists() and path.stat().st_size else []
    missing = strategy.episodes - len(have)
    if missing <= 0:
        return have[: strategy.episodes]
    path.parent.mkdir(parents=True, exist_ok=True)
    env = open_target(spec, target, testbed, policy, credentials)
    first = record_seed(seed, strategy.episodes, round_index) + len(have)
    try:
        return have + sysid.record(policy, env, missing, path, seed=first)
    finally:
        env.close()
