"""The transfer harness: a plan of (target, strategy, seed) units, run in parallel and resumably, then the report.

Each unit adapts the pretrained policy to a target with one strategy and one training seed and
evaluates it on the plan's step grid (0, eval_every, ..., budget). The evaluation at grid step
``t`` is of the newest weights trained on at most ``t`` target env steps: a PPO update that
would use steps past ``t`` comes after it. Evaluations use their own env, deterministic actions
and the episode seeds ``EVAL_SEED + i`` for every unit, so the curves of all strategies are
paired episode by episode; they never touch the training env or any RNG, so a unit's training is
the same whatever the grid.

On disk (``out_dir``): ``plan.json`` (what the run is; a rerun with another plan is refused),
``gap.json`` (the zero-shot gap per target, measured before any training), ``results.jsonl``
(one record per evaluation, appended by the parent process alone, a unit at a time, fsynced at
the end of each unit) and the report. A rerun keeps the units whose every grid step is on disk,
rewrites ``results.jsonl`` atomically without the lines of a unit cut short, and runs only the
missing units, so the file never holds an evaluation twice. ``write_run_report`` rebuilds the
report from those files alone, counting complete units only (``sim2real report RUN_DIR``).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real import catalog, zoo
from sim2real.catalog import SOURCE, TaskSpec, Threshold
from sim2real.errors import allowed
from sim2real.evaluation import report
from sim2real.evaluation.backends import Backend, make_backend
from sim2real.evaluation.plan import BASELINE, HarnessError, Plan, PolicyBlob, Unit, check_policy, make_plan
from sim2real.evaluation.ray_backend import shipped_modules
from sim2real.evaluation.rollout import evaluate
from sim2real.evaluation.summary import measured_verdict, summarize
from sim2real.evaluation.unit import RunContext, UnitResult, execute, model_path
from sim2real.factory import make_env
from sim2real.formatting import percent
from sim2real.records import JsonlWriter, read_jsonl, write_bytes_atomic, write_json_atomic
from sim2real.training import EVAL_SEED, versions

__all__ = [
    "GAP_FILE",
    "MODELS_DIR",
    "PLAN_FILE",
    "RESULTS_FILE",
    "UNITS_FILE",
    "HarnessError",
    "Plan",
    "Progress",
    "holds_another_plan",
    "make_plan",
    "model_path",
    "recommend",
    "run",
    "write_run_report",
    "zero_shot_gap",
]

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, concurrent runs into one directory are not detected
    fcntl = None

PLAN_FILE = "plan.json"
GAP_FILE = "gap.json"
RESULTS_FILE = "results.jsonl"
UNITS_FILE = "units.jsonl"
LOCK_FILE = ".lock"
MODELS_DIR = "models"

ZERO_SHOT, TRANSFER, RETRAIN = "zero_shot", "transfer", "retrain"
VERDICTS = (ZERO_SHOT, TRANSFER, RETRAIN)
LITTLE_RETAINED = 0.1
"""Below this share of its source edge over random actions, a policy is 'near zero' on the target."""


class _UniformRandom:
    """Uniformly random actions from a seeded copy of the action space: the floor of the zero-shot gap."""

    def __init__(self, space: gym.Space, seed: int) -> None:
        self.space = copy.deepcopy(space)
        self.space.seed(seed)

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, None]:
        """A random action, whatever the observation."""
        return self.space.sample(), None


def _level(policy: Any, env: gym.Env, episodes: int) -> dict[str, float]:
    try:
        summary = evaluate(policy, env, episodes, seed=EVAL_SEED)
    finally:
        env.close()
    return {"success": summary["success_rate"], "return": summary["mean_return"]}


def zero_shot_gap(spec: str | Path | TaskSpec, policy: str | Path | BaseAlgorithm, target: str,
                  episodes: int) -> dict[str, Any]:
    """Success and return of the pretrained policy on the source and on `target`, and of random actions on `target`.

    Measured before any budget is spent, to tell whether transfer is worth it (see `recommend`);
    `gap` is the drop from source to target and `retained` the share of its edge over random
    actions the policy keeps on the target, both in the task's threshold metric. A target whose
    observation or action differs from the policy's (a changed task) has no zero-shot level: its
    `spaces` say how they differ.
    """
    spec = catalog.load(spec)
    kind = spec.target(target).kind
    source_env = make_env(spec, SOURCE)
    try:
        model = policy if isinstance(policy, BaseAlgorithm) else zoo.load_policy(policy, source_env)
    finally:
        source_env.close()
    env = make_env(spec, target)
    try:
        random_actions = _UniformRandom(env.action_space, EVAL_SEED)
        changed = zoo.space_changes(model, env)
    finally:
        env.close()
    gap: dict[str, Any] = {
        "target": target,
        "kind": kind,
        "episodes": episodes,
        "metric": spec.threshold.metric,
        "threshold": spec.threshold.value,
        "spaces": changed,
        "zero_shot": None if changed else _level(model, make_env(spec, target), episodes),
        "source": _level(model, make_env(spec, SOURCE), episodes),
        "random": _level(random_actions, make_env(spec, target), episodes),
    }
    if changed:
        return {**gap, "gap": None, "retained": None}
    source, zero, _ = _levels(gap)
    return {**gap, "gap": source - zero, "retained": _retained(gap)}


def _levels(gap: Mapping[str, Any]) -> tuple[float, float, float]:
    """The source, zero-shot and random-action levels of a gap, in its threshold metric."""
    metric = gap["metric"]
    return gap["source"][metric], gap["zero_shot"][metric], gap["random"][metric]


def _retained(gap: Mapping[str, Any]) -> float | None:
    """Share of the source edge over random actions kept on the target; None without a real edge on the source.

    An edge is real when it covers at least LITTLE_RETAINED of the way from random actions to the
    threshold: below that, evaluation noise would decide the ratio.
    """
    source, zero, floor = _levels(gap)
    edge = source - floor
    if edge <= 0 or edge < LITTLE_RETAINED * abs(gap["threshold"] - floor):
        return None
    return (zero - floor) / edge


def _show(metric: str, value: float) -> str:
    return f"{percent(value)}" if metric == "success" else f"{value:.1f}"


def recommend(gap: Mapping[str, Any]) -> tuple[str, str]:
    """The verdict on a zero-shot gap ("zero_shot", "transfer" or "retrain") and a sentence saying why.

    zero_shot: the policy already meets the threshold on the target. retrain: it has no real edge
    over random actions on the source, or keeps less than LITTLE_RETAINED of it on a target while
    missing the threshold on the source too, so adapting it is unlikely to beat scratch by much.
    transfer: otherwise. A policy that solves the source but lost its edge on the target is the
    case for residual (the far targets: measured in the README), one that kept part of it for
    any strategy that starts at the pretrained behaviour. Reads `metric`, `threshold`, `target` and the three levels.
    """
    metric, threshold, target = gap["metric"], gap["threshold"], gap["target"]
    label = "success rate" if metric == "success" else "mean return"
    if gap.get("spaces"):
        source, floor = gap["source"][metric], gap["random"][metric]
        return TRANSFER, (f"{target} changes the task and its spaces ({gap['spaces']}): the pretrained policy "
                          f"cannot run there as it is ({label} {_show(metric, source)} on the source, "
                          f"{_show(metric, floor)} with random actions on {target}; threshold "
                          f"{_show(metric, threshold)}). Training strategies reuse every layer that fits and "
                          f"widen those that read new observation entries; whether that beats scratch is what "
                          f"this run measures.")
    source, zero, floor = _levels(gap)
    numbers = (f"{label} on {target} {_show(metric, zero)} zero-shot, {_show(metric, source)} on the source, "
               f"{_show(metric, floor)} with random actions; threshold {_show(metric, threshold)}")
    if zero >= threshold:
        return ZERO_SHOT, (f"Zero-shot is enough on {target}: the pretrained policy meets the threshold without "
                           f"training ({numbers}). Transfer can only confirm it.")
    if gap.get("kind") == "task":
        return TRANSFER, (f"{target} is a new task ({numbers}): the pretrained policy is not expected to solve it "
                          f"as it is, but its skills should carry over: adapting it should reach the threshold "
                          f"sooner than scratch, which is what this run measures.")
    retained = _retained(gap)
    if retained is None:
        return RETRAIN, (f"Expect little gain from transfer on {target}: the pretrained policy does hardly better "
                         f"than random actions even on the source ({numbers}). Train a better source policy, or "
                         f"train on the target (scratch is the baseline).")
    note = "" if source >= threshold else " It misses the threshold on the source as well."
    if retained < LITTLE_RETAINED and source < threshold:
        return RETRAIN, (f"Expect little gain from transfer on {target}: the pretrained policy does barely better "
                         f"than random actions there ({numbers}).{note} Consider retraining on the target "
                         f"(scratch is the baseline) or a better source policy.")
    if retained < LITTLE_RETAINED:
        return TRANSFER, (f"{target} undoes a policy that still solves the source ({numbers}): the shift is likely "
                          f"a correction of its actions (a turned mount, a weaker motor) or physics the simulator "
                          f"can fit. Try residual first (SAC learns a correction of the frozen policy's action, "
                          f"starting at its behaviour), then sysid_finetune (fits the simulator to recorded target "
                          f"episodes; costs only the recorded steps); re-initialising or fine-tuning the weights "
                          f"seldom beats scratch this far from the source.")
    return TRANSFER, (f"Transfer should pay on {target}: the pretrained policy keeps {percent(retained)} of its "
                      f"edge over random actions ({numbers}).{note} Try residual and finetune first: both start at the "
                      f"pretrained behaviour and should reach the threshold sooner than scratch.")


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


@contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold an advisory lock on the run directory: two runs appending to one results.jsonl would duplicate units."""
    with open(out / LOCK_FILE, "w") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise HarnessError(f"another run is writing into {out}; wait for it or choose another --out") from exc
        yield


NOT_THE_PLAN = ("policy", "execution")
"""plan.json keys a resumed run may change: where the policy file is, and how units run (local pool or Ray)."""


def claim_run_directory(out: Path, description: Mapping[str, Any]) -> None:
    """Write plan.json, or check that the one there describes this plan (policy path and execution may differ).

    plan.json then says how this session runs the units (`execution`); units.jsonl keeps where
    each unit ran.
    """
    path = out / PLAN_FILE
    if not path.exists():
        if (out / RESULTS_FILE).exists():
            raise HarnessError(f"{out} holds {RESULTS_FILE} but no {PLAN_FILE}: it is not a transfer run directory "
                               f"this version can resume; choose another --out")
        write_json_atomic(path, dict(description))
        return
    previous = _read_plan(path)
    differences = _differences(previous, description)
    results = out / RESULTS_FILE
    if differences and results.exists() and results.stat().st_size:  # computed results of another plan: kept
        raise HarnessError(f"{out} holds a run of another plan ({'; '.join(differences)}); rerun with the same "
                           f"settings to resume it, or choose another --out")
    if previous != dict(description):  # nothing computed yet, or only the policy's path or the execution changed
        write_json_atomic(path, dict(description))


def _read_plan(path: Path) -> dict[str, Any]:
    """The plan.json at `path`, or a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path} is not valid JSON ({exc}); remove the directory or choose another --out") from exc


def _differences(previous: Mapping[str, Any], description: Mapping[str, Any]) -> list[str]:
    """How a previous plan.json differs from `description`, the keys a resumed run may change (NOT_THE_PLAN) aside."""
    return [f"{key}: {previous.get(key)!r} there, {description.get(key)!r} here"
            for key in sorted(set(previous) | set(description))
            if key not in NOT_THE_PLAN and previous.get(key) != description.get(key)]


def holds_another_plan(out_dir: str | Path, plan: Plan) -> bool:
    """Whether `out_dir` holds a run of another plan (or of another policy file), which `run` refuses to resume."""
    path = Path(out_dir) / PLAN_FILE
    if not path.exists():
        return False
    description = {**plan.to_dict(), "policy_sha256": PolicyBlob.read(plan.policy).sha256}
    return bool(_differences(_read_plan(path), description))


def _line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")


def _complete(records: Sequence[Mapping[str, Any]], units: Sequence[str],
              steps: Sequence[int]) -> dict[str, list[Mapping[str, Any]]]:
    """The records of each unit whose every grid step is present, in plan order (the first record of a step wins)."""
    by_unit: dict[Any, dict[Any, Mapping[str, Any]]] = {}
    for record in records:
        by_unit.setdefault(record.get("unit"), {}).setdefault(record.get("steps"), record)
    return {unit: [by_unit[unit][step] for step in steps] for unit in units
            if all(step in by_unit.get(unit, {}) for step in steps)}


def _resume(path: Path, plan: Plan) -> set[str]:
    """The units complete on disk; results.jsonl is rewritten atomically without any other line.

    Lines of a unit cut short (the parent died while writing it) and repeated steps are dropped,
    so appending the rerun units never duplicates an evaluation.
    """
    if not path.exists():
        return set()
    records = read_jsonl(path)
    complete = _complete(records, [unit.key for unit in plan.units()], plan.steps)
    kept = [record for unit in complete.values() for record in unit]
    if len(kept) != len(records):
        write_bytes_atomic(path, b"".join(_line(record) for record in kept))
    return set(complete)


def _gaps(out: Path, plan: Plan, tracker: _Tracker) -> dict[str, dict[str, Any]]:
    """The zero-shot gap and verdict per target: read from gap.json, or measured now and written there."""
    path = out / GAP_FILE
    gaps = json.loads(path.read_text()) if path.exists() else {}
    if set(gaps) != set(plan.targets):
        gaps = {}
        for target in plan.targets:
            gap = zero_shot_gap(plan.spec, plan.policy, target, plan.episodes)
            verdict, advice = recommend(gap)
            gaps[target] = {**gap, "verdict": verdict, "advice": advice}
        write_json_atomic(path, gaps)
    for gap in gaps.values():
        tracker.report(message=gap["advice"])
    return gaps


def _read_json(path: Path) -> Any:
    """A run directory's JSON file, or a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not valid JSON ({exc}); it is not a run this version can read") from None


def write_run_report(run_dir: str | Path) -> dict[str, Path]:
    """(Re)write the report of a run directory from its plan.json, gap.json and results.jsonl alone.

    Only complete units count, in plan order, so a report of a run still going (or cut short)
    is sound and the same records always give the same report. What `sim2real report` runs.
    """
    out = Path(run_dir)
    missing = [name for name in (PLAN_FILE, RESULTS_FILE) if not (out / name).is_file()]
    if missing:
        raise HarnessError(f"{out} is not a transfer run directory: it lacks {allowed(missing)}")
    plan = _read_json(out / PLAN_FILE)
    complete = _complete(read_jsonl(out / RESULTS_FILE), plan["units"], plan["steps"])
    if not complete:
        raise HarnessError(f"{out}: no unit is complete yet ({len(plan['units'])} planned), nothing to report")
    records = [record for unit in complete.values() for record in unit]
    summary = summarize(records, Threshold(**plan["threshold"]), plan["budget"])
    gaps = _read_json(out / GAP_FILE) if (out / GAP_FILE).is_file() else {}
    verdict = measured_verdict(summary)
    settings = {
        "plan": plan,
        "versions": versions(),
        "recommendation": "\n\n".join([*(gap["advice"] for gap in gaps.values()), verdict]).strip(),
        "verdict": verdict,
        "zero_shot_gap": gaps,
        "complete_units": f"{len(complete)} of {len(plan['units'])}",
    }
    return report.write_report(out, summary, records, settings)


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
        check_policy(plan)
        return _run(plan, Path(out_dir), executor, progress, save_models)
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
         save_models: bool) -> Path:
    """`run` on a started backend, the policy checked."""
    blob = PolicyBlob.read(plan.policy)
    description = {**plan.to_dict(), "policy_sha256": blob.sha256, "execution": executor.describe()}
    out.mkdir(parents=True, exist_ok=True)
    units = plan.units()
    with exclusive(out):
        claim_run_directory(out, description)
        results = out / RESULTS_FILE
        complete = _resume(results, plan)
        tracker = _Tracker(len(units), len(complete), progress)
        tracker.report(message=f"{len(complete)} of {len(units)} units already complete" if complete else None)
        _gaps(out, plan, tracker)
        pending = {unit.key: unit for unit in _longest_first(units) if unit.key not in complete}
        context = RunContext(plan, blob, keep_models=save_models)
        mine = versions()
        with JsonlWriter(results) as writer, JsonlWriter(out / UNITS_FILE) as placements:
            for key, result, node in executor.run(execute, context, pending,
                                                  notify=lambda line: tracker.report(message=line)):
                _check_versions(key, node, result, mine)
                if result.model is not None:
                    write_bytes_atomic(model_path(out / MODELS_DIR, key), result.model)
                for record in result.records:
                    writer.write(record)
                writer.fsync()
                placements.write({"unit": key, "node": node, "versions": result.versions})
                placements.fsync()
                tracker.unit_done(key)
        write_run_report(out)
    return out
