"""Pretrain a policy on a task's source domain (nominal or randomized) and write a policy bundle.

Hyperparameters come from the task YAML (``train.<algo>``) and can be overridden; the env runs in
parallel processes; a periodic deterministic evaluation keeps the best weights, which are what the
bundle holds. The same task, algorithm and seed give the same learning curve on one machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real import catalog
from sim2real.checkpoint import BestCheckpoint
from sim2real.checks import check_count, check_seed
from sim2real.defaults import EVAL_SEED
from sim2real.errors import Sim2RealError
from sim2real.factory import make_env
from sim2real.models import build_vec_env, make_model
from sim2real.provenance import versions
from sim2real.rollout import evaluate
from sim2real.spec import SOURCE, TaskSpec, Threshold
from sim2real.zoo import ALGORITHMS, MODEL_FILE, algorithm_class, load_card, save_bundle, space_changes


@dataclass
class TrainResult:
    """What `train` produced: the model (best weights), its card, and where the bundle went."""

    model: BaseAlgorithm
    card: dict[str, Any]
    directory: Path | None
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class TrainingRequest:
    """A training run checked before any step: what `train` will do, and the bundle it continues (if any)."""

    spec: TaskSpec
    target: str
    randomize: bool
    algo: str
    steps: int
    seed: int
    n_envs: int
    hyperparameters: Mapping[str, Any]
    card_episodes: int
    out: Path | None
    continues: Mapping[str, Any] | None = None
    """The card of the bundle this run continues training (its model is loaded from `continue_from`)."""
    continue_from: Path | None = None
    stop_at: Threshold | None = None
    """Training ends at the first evaluation reaching this level (None: all `steps` are trained)."""


def plan_training(
    task: str | Path | TaskSpec,
    *,
    target: str | None = None,
    randomize: bool | None = None,
    algo: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    out: Path | None = None,
    n_envs: int | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    card_episodes: int = 100,
    force: bool = False,
    continue_from: Path | None = None,
    stop_at: float | None = None,
    all_steps: bool = False,
) -> TrainingRequest:
    """Check everything a training run needs before it starts; an error names the bad value and what is accepted.

    `out` is never overwritten unless `force` (or it is the bundle `continue_from` names, whose
    training this run carries on: the card's task settings are kept, `steps` more are trained).
    Every target's env is built once, so a bad target argument fails now, not when the card is
    scored after training. Training stops early at the task's `train.stop_at` level (not when
    randomized), or at `stop_at` (in the task's metric), unless `all_steps`.
    """
    spec = catalog.load(task)
    card = _continued_card(continue_from, spec) if continue_from is not None else None
    if card is not None:
        given = {"target": target, "randomize": randomize or None, "algo": algo, "n_envs": n_envs, "seed": seed}
        kept = {"target": card["target"], "randomize": card["randomized"], "algo": card["algo"],
                "n_envs": card["n_envs"], "seed": card["seed"]}
        for name, value in given.items():
            if value is not None and value != kept[name]:
                raise Sim2RealError(f"--{name.replace('_', '-')} {value!r} with --continue: {continue_from} was "
                                    f"trained with {kept[name]!r}, and a continued run keeps its settings")
        target, randomize, algo, n_envs, seed = (kept[k] for k in ("target", "randomize", "algo", "n_envs", "seed"))
    target = SOURCE if target is None else target
    spec.target(target)
    algo = algo or spec.train.algo
    if algo not in ALGORITHMS:
        raise Sim2RealError(f"unknown algorithm {algo!r} (allowed: {', '.join(ALGORITHMS)})")
    config = spec.train.config(algo)
    steps = config.steps if steps is None else check_count("steps", steps, meaning="env steps to train")
    n_envs = config.n_envs if n_envs is None else check_count("n_envs", n_envs, meaning="parallel envs")
    seed = check_seed(0 if seed is None else seed)
    check_count("episodes", card_episodes, meaning="episodes per target for the card")
    stop = None if all_steps else _stop_level(spec, stop_at, bool(randomize))
    if out is not None:
        _check_bundle_out(Path(out), force, continue_from)
    for name in (SOURCE, *spec.targets):
        make_env(spec, name).close()
    params = {**(card["hyperparameters"] if card else config.hyperparameters), **(hyperparameters or {})}
    return TrainingRequest(spec, target, bool(randomize), algo, steps, seed, n_envs, params, card_episodes,
                           None if out is None else Path(out), card, continue_from, stop)


def _stop_level(spec: TaskSpec, stop_at: float | None, randomize: bool) -> Threshold | None:
    """The level that ends training early: `stop_at` in the task's metric, else the task's own `train.stop_at`.

    Randomized training does not stop at the task's level: its aim is robustness across the
    randomized range, which the evaluation on the source does not measure.
    """
    if stop_at is None:
        return None if randomize else spec.train.stop_at
    metric = spec.threshold.metric
    if isinstance(stop_at, bool) or not isinstance(stop_at, int | float) or not math.isfinite(stop_at) or (
            metric == "success" and not 0 < stop_at <= 1):
        accepted = "a success rate in (0, 1]" if metric == "success" else "a finite mean return"
        raise Sim2RealError(f"--stop-at {stop_at!r}: {spec.name} is scored by {metric}, so give {accepted}")
    return Threshold(metric, float(stop_at))


def _continued_card(bundle: Path, spec: TaskSpec) -> dict[str, Any]:
    """The card of a bundle to continue; an error if it is no bundle or is of another task."""
    bundle = Path(bundle)
    if not (bundle / MODEL_FILE).is_file():
        raise Sim2RealError(f"--continue {bundle}: not a policy bundle (it has no {MODEL_FILE}); give a folder "
                            f"`sim2real train` wrote")
    card = load_card(bundle)
    if card["task"] != spec.name:
        raise Sim2RealError(f"--continue {bundle}: it was trained on task {card['task']!r}, not {spec.name!r}")
    return card


def _check_bundle_out(out: Path, force: bool, continue_from: Path | None) -> None:
    """Refuse to write a bundle over another one unless told to."""
    if out.exists() and not out.is_dir():
        raise Sim2RealError(f"--out {out} is a file; give a folder for the bundle")
    continuing_here = continue_from is not None and out.resolve() == Path(continue_from).resolve()
    taken = [name for name in (MODEL_FILE, "card.json") if (out / name).exists()]
    if taken and not force and not continuing_here:
        raise Sim2RealError(f"{out} already holds a policy bundle; add --force to replace it, --continue {out} to "
                            f"train it further, or choose another --out")


def train(
    task: str | Path | TaskSpec,
    *,
    target: str | None = None,
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
    force: bool = False,
    stop_at: float | None = None,
    all_steps: bool = False,
) -> TrainResult:
    """Train `algo` on the task's `target` domain and, with `out`, write a bundle evaluated on every target.

    Everything is checked before training (`plan_training`); an existing bundle at `out` is
    replaced only with `force`. Training ends early at the task's `train.stop_at` level (or
    `stop_at`) unless `all_steps`. TensorBoard logs go to `tensorboard_log` when given (kept out of
    the bundle, which ships).
    """
    request = plan_training(task, target=target, randomize=randomize, algo=algo, steps=steps, seed=seed, out=out,
                            n_envs=n_envs, hyperparameters=hyperparameters, card_episodes=card_episodes, force=force,
                            stop_at=stop_at, all_steps=all_steps)
    return run_training(request, eval_every=eval_every, eval_episodes=eval_episodes, progress_bar=progress_bar,
                        tensorboard_log=tensorboard_log, on_eval=on_eval)


def run_training(
    request: TrainingRequest,
    *,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    progress_bar: bool = False,
    tensorboard_log: Path | None = None,
    on_eval: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Run a checked training request: a fresh model, or the continued bundle's, trained `request.steps` more."""
    spec, out, previous = request.spec, request.out, request.continues
    torch.set_num_threads(1)
    venv = build_vec_env(spec, request.target, request.randomize, request.n_envs, request.seed)
    if previous is not None and request.continue_from is not None:
        model = algorithm_class(request.algo).load(Path(request.continue_from) / MODEL_FILE, env=venv, device="cpu")
    else:
        model = make_model(request.algo, venv, request.hyperparameters, request.seed,
                           str(tensorboard_log) if tensorboard_log is not None else None)
    checkpoint = BestCheckpoint(spec, request.target, eval_every or spec.train.eval_every,
                                eval_episodes or spec.train.eval_episodes, on_eval,
                                evaluate_at_start=previous is not None, stop_at=request.stop_at,
                                gate=spec.train.eval_gate)
    started = time.perf_counter()
    try:
        model.learn(request.steps, callback=checkpoint, progress_bar=progress_bar,
                    reset_num_timesteps=previous is None)
    finally:
        venv.close()
    wall = time.perf_counter() - started
    card = {
        "name": out.name if out is not None else f"{spec.name}-{request.algo}",
        "task": spec.name,
        "task_file": spec.path.name,
        "spec_hash": spec.spec_hash,
        "algo": request.algo,
        "target": request.target,
        "randomized": request.randomize,
        "train_steps": model.num_timesteps,
        "metric": spec.threshold.metric,
        "best_at_steps": checkpoint.best_steps,
        "stop_at": None if request.stop_at is None else {request.stop_at.metric: request.stop_at.value},
        "stopped_at_steps": checkpoint.stopped_at,
        "evaluations": len(checkpoint.history),
        "evaluations_skipped": checkpoint.skipped,
        "seed": request.seed,
        "n_envs": request.n_envs,
        "hyperparameters": _jsonable(request.hyperparameters),
        "wall_seconds": round(wall + (previous or {}).get("wall_seconds", 0.0), 1),
        "versions": versions(),
    }
    if previous is not None:
        card["continued"] = [*previous.get("continued", []), {"from_steps": previous["train_steps"],
                                                               "steps": request.steps, "wall_seconds": round(wall, 1)}]
    scoring = time.perf_counter()
    card.update(score_card(model, spec, request.card_episodes))
    card["card_seconds"] = round(time.perf_counter() - scoring, 1)
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
