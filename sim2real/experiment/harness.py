"""The transfer harness: a plan of (target, strategy, seed) units, run in parallel and resumably, then the report.

Each unit adapts the pretrained policy to a target with one strategy and one training seed and
evaluates it on the plan's step grid (0, eval_every, ..., budget). The evaluation at grid step
``t`` is of the newest weights trained on at most ``t`` target env steps: a PPO update that
would use steps past ``t`` comes after it. Evaluations use their own env, deterministic actions
and the episode seeds ``EVAL_SEED + i`` for every unit, so the curves of all strategies are
paired episode by episode; they never touch the training env or any RNG, so a unit's training is
the same whatever the grid.

Only this process writes the run directory: :mod:`sim2real.experiment.run_directory` names its
files, claims it for one plan, resumes it and writes its report; the harness writes gap.json,
each unit's records (results.jsonl), its node and versions (units.jsonl) and its model (models/).
The zero-shot gap and its advice are :mod:`sim2real.experiment.gap`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real.experiment.backends import Backend, make_backend
from sim2real.experiment.gap import recommend, zero_shot_gap
from sim2real.experiment.plan import BASELINE, HarnessError, Plan, PolicyBlob, Unit, check_policy
from sim2real.experiment.ray_backend import shipped_modules
from sim2real.experiment.run_directory import (
    GAP_FILE,
    MODELS_DIR,
    RESULTS_FILE,
    UNITS_FILE,
    claim_run_directory,
    exclusive,
    resume,
    write_run_report,
)
from sim2real.experiment.unit import RunContext, UnitResult, execute, model_path
from sim2real.provenance import versions
from sim2real.records import JsonlWriter, write_bytes_atomic, write_json_atomic
from sim2real.spec import TaskSpec


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for a progress bar: units done of total, the unit just finished, an ETA in seconds."""

    done: int
    total: int
    unit: str | None
    elapsed: float
    eta: float | None
    message: str | None = None


class _Tracker:
    """Counts finished units and estimates the time left from the units finished in this session."""

    def __init__(self, total: int, done: int, progress: Callable[[Progress], None] | None) -> None:
        self.total, self.done, self.progress = total, done, progress
        self.resumed = done
        self.started = time.perf_counter()

    def report(self, unit: str | None = None, message: str | None = None) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.started
        fresh = self.done - self.resumed
        eta = elapsed / fresh * (self.total - self.done) if fresh else None
        self.progress(Progress(self.done, self.total, unit, elapsed, eta, message))

    def unit_done(self, unit: str) -> None:
        self.done += 1
        self.report(unit)


def _gaps(out: Path, plan: Plan, tracker: _Tracker, pretrained: BaseAlgorithm) -> dict[str, dict[str, Any]]:
    """The zero-shot gap and verdict per target: read from gap.json, or measured now and written there."""
    path = out / GAP_FILE
    gaps = json.loads(path.read_text()) if path.exists() else {}
    if set(gaps) != set(plan.targets):
        gaps = {}
        for target in plan.targets:
            gap = zero_shot_gap(plan.spec, pretrained, target, plan.episodes)
            verdict, advice = recommend(gap)
            gaps[target] = {**gap, "verdict": verdict, "advice": advice}
        write_json_atomic(path, gaps)
    for gap in gaps.values():
        tracker.report(message=gap["advice"])
    return gaps


def run(
    plan: Plan,
    out_dir: str | Path,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    save_models: bool = False,
    runtime_env: Mapping[str, Any] | None = None,
) -> Path:
    """Run the plan's missing units into `out_dir` (resuming a previous run of the same plan) and write the report.

    Everything that can be wrong with the plan, the policy or the backend is checked before any
    training. Units run on `backend` ("local": a pool of `workers` processes, default one per
    core; "ray": a cluster at `ray_address`, or a local Ray, with `runtime_env` and the task's
    own env modules shipped with the job); everything a unit makes comes back to this process,
    which alone writes files. `progress` is called at the start, with the zero-shot advice,
    while the cluster has no room, and after each unit. With `save_models`, each unit's trained
    model is kept in out_dir/models/ (see `model_path`).
    """
    environment = ray_runtime_env(plan.spec, runtime_env) if backend == "ray" else None
    executor = make_backend(backend, workers=workers, address=ray_address, runtime_env=environment)
    executor.start(len(plan.units()))  # the workers import while the policy is checked and the gap measured
    try:
        pretrained = check_policy(plan)
        return _run(plan, Path(out_dir), executor, progress, save_models, pretrained)
    finally:
        executor.close()


def ray_runtime_env(spec: TaskSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Ray job's runtime_env: the user's, plus their own modules the task names (env class, bind calls)."""
    environment = dict(given or {})
    named = [spec.env_id, *(param.bind["call"] for param in spec.params.values()
                            if isinstance(param.bind, Mapping) and "call" in param.bind)]
    modules = [path for path in shipped_modules(name for name in named if ":" in name)
               if path not in environment.get("py_modules", [])]
    if modules:
        environment["py_modules"] = [*environment.get("py_modules", []), *modules]
    return environment


def _longest_first(units: list[Unit]) -> list[Unit]:
    """The baseline's units first: usually the longest (a policy that fails runs its evaluation episodes to the
    time limit), and starting the longest units first leaves no worker alone with one at the end."""
    return sorted(units, key=lambda unit: unit.strategy.name != BASELINE)


def _check_versions(key: str, node: str, result: UnitResult, mine: Mapping[str, str]) -> None:
    """Refuse a unit run with other package versions than this driver's (`mine`): it would give other numbers."""
    differing = [f"{name} {result.versions.get(name)} there, {version} here" for name, version in mine.items()
                 if result.versions.get(name) != version]
    if differing:
        raise HarnessError(f"unit {key} ran on node {node} with other versions ({'; '.join(differing)}): install "
                           f"the driver's versions on every node (or ship them with --runtime-env pip); the unit "
                           f"was not saved, rerun to resume")


def _run(plan: Plan, out: Path, executor: Backend, progress: Callable[[Progress], None] | None,
         save_models: bool, pretrained: BaseAlgorithm) -> Path:
    """`run` on a started backend, the policy checked (and loaded: `pretrained`)."""
    blob = PolicyBlob.read(plan.policy)
    record = plan.to_record(blob.sha256, executor.describe())
    out.mkdir(parents=True, exist_ok=True)
    units = plan.units()
    with exclusive(out):
        claim_run_directory(out, record)
        results = out / RESULTS_FILE
        complete = resume(results, plan)
        tracker = _Tracker(len(units), len(complete), progress)
        tracker.report(message=f"{len(complete)} of {len(units)} units already complete" if complete else None)
        _gaps(out, plan, tracker, pretrained)
        pending = {unit.key: unit for unit in _longest_first(units) if unit.key not in complete}
        context = RunContext(plan, blob, keep_models=save_models)
        mine = versions()
        with JsonlWriter(results) as writer, JsonlWriter(out / UNITS_FILE) as placements:
            for key, result, node in executor.run(execute, context, pending,
                                                  notify=lambda line: tracker.report(message=line)):
                _check_versions(key, node, result, mine)
                if result.model is not None:
                    write_bytes_atomic(model_path(out / MODELS_DIR, key), result.model)
                for evaluation in result.records:
                    writer.write(evaluation.to_json())
                writer.fsync()
                placements.write({"unit": key, "node": node, "versions": result.versions})
                placements.fsync()
                tracker.unit_done(key)
        write_run_report(out)
    return out
