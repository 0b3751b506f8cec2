"""A transfer run's directory: claimed for one plan, locked while a run writes, resumed without duplicates.

On disk (``out_dir``): ``plan.json`` (what the run is; a rerun with another plan is refused),
``gap.json`` (the zero-shot gap per target, measured before any training), ``results.jsonl``
(one record per evaluation, appended by the parent process alone, a unit at a time, fsynced at
the end of each unit) and the report. A rerun keeps the units whose every grid step is on disk,
rewrites ``results.jsonl`` atomically without the lines of a unit cut short, and runs only the
missing units, so the file never holds an evaluation twice. ``write_run_report`` rebuilds the
report from those files alone, counting complete units only (``sim2real report RUN_DIR``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sim2real.errors import allowed
from sim2real.experiment import report
from sim2real.experiment.plan import HarnessError, Plan, PolicyBlob
from sim2real.experiment.run_files import (
    EvaluationRecord,
    PlanRecord,
    RunFileError,
    evaluation_records,
    read_json,
    read_plan,
)
from sim2real.experiment.summary import measured_verdict, summarize
from sim2real.provenance import versions
from sim2real.records import jsonl_line, read_jsonl, write_bytes_atomic, write_json_atomic

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


REUSE_ADVICE = "remove the directory or choose another --out"
NOT_THE_PLAN = ("policy", "execution")
"""plan.json keys a resumed run may change: where the policy file is, and how units run (local pool or Ray)."""


def claim_run_directory(out: Path, plan: PlanRecord) -> None:
    """Write plan.json, or check that the one there describes this plan (policy path and execution may differ).

    plan.json then says how this session runs the units (`execution`); units.jsonl keeps where
    each unit ran.
    """
    path, description = out / PLAN_FILE, plan.to_json()
    if not path.exists():
        if (out / RESULTS_FILE).exists():
            raise HarnessError(f"{out} holds {RESULTS_FILE} but no {PLAN_FILE}: it is not a transfer run directory "
                               f"this version can resume; choose another --out")
        write_json_atomic(path, description)
        return
    previous = read_json(path, REUSE_ADVICE)
    differences = _differences(previous, description)
    results = out / RESULTS_FILE
    if differences and results.exists() and results.stat().st_size:  # computed results of another plan: kept
        raise HarnessError(f"{out} holds a run of another plan ({'; '.join(differences)}); rerun with the same "
                           f"settings to resume it, or choose another --out")
    if previous != description:  # nothing computed yet, or only the policy's path or the execution changed
        write_json_atomic(path, description)


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
    description = plan.to_record(PolicyBlob.read(plan.policy).sha256).to_json()
    return bool(_differences(read_json(path, REUSE_ADVICE), description))


def _complete(records: Sequence[EvaluationRecord], units: Sequence[str],
              steps: Sequence[int]) -> dict[str, list[EvaluationRecord]]:
    """The records of each unit whose every grid step is present, in plan order (a step's last record wins, as in
    the curves: see :mod:`sim2real.experiment.curves`)."""
    by_unit: dict[str | None, dict[float, EvaluationRecord]] = {}
    for record in records:
        by_unit.setdefault(record.unit, {})[record.steps] = record
    return {unit: [by_unit[unit][step] for step in steps] for unit in units
            if all(step in by_unit.get(unit, {}) for step in steps)}


def resume(path: Path, plan: Plan) -> set[str]:
    """The units complete on disk; results.jsonl is rewritten atomically without any other line.

    Lines of a unit cut short (the parent died while writing it) and repeated steps are dropped,
    so appending the rerun units never duplicates an evaluation.
    """
    if not path.exists():
        return set()
    records = read_results(path)
    complete = _complete(records, [unit.key for unit in plan.units()], plan.steps)
    kept = [record for unit in complete.values() for record in unit]
    if len(kept) != len(records):
        write_bytes_atomic(path, b"".join(jsonl_line(record.to_json(), path) for record in kept))
    return set(complete)


def read_results(path: Path) -> list[EvaluationRecord]:
    """The evaluation records of a results.jsonl, each checked (an error naming the file and the record)."""
    try:
        return evaluation_records(read_jsonl(path))
    except RunFileError as exc:
        raise RunFileError(f"{path}: {exc}") from None


def write_run_report(run_dir: str | Path) -> dict[str, Path]:
    """(Re)write the report of a run directory from its plan.json, gap.json and results.jsonl alone.

    Only complete units count, in plan order, so a report of a run still going (or cut short)
    is sound and the same records always give the same report. What `sim2real report` runs.
    """
    out = Path(run_dir)
    missing = [name for name in (PLAN_FILE, RESULTS_FILE) if not (out / name).is_file()]
    if missing:
        raise HarnessError(f"{out} is not a transfer run directory: it lacks {allowed(missing)}")
    plan = read_plan(out / PLAN_FILE)
    complete = _complete(read_results(out / RESULTS_FILE), plan.units, plan.steps)
    if not complete:
        raise HarnessError(f"{out}: no unit is complete yet ({len(plan.units)} planned), nothing to report")
    records = [record for unit in complete.values() for record in unit]
    summary = summarize(records, plan.threshold, plan.budget)
    gaps = read_json(out / GAP_FILE) if (out / GAP_FILE).is_file() else {}
    verdict = measured_verdict(summary)
    settings = {
        "plan": plan.to_json(),
        "versions": versions(),
        "recommendation": "\n\n".join([*(gap["advice"] for gap in gaps.values()), verdict]).strip(),
        "verdict": verdict,
        "zero_shot_gap": gaps,
        "complete_units": f"{len(complete)} of {len(plan.units)}",
    }
    return report.write_report(out, summary, records, settings)
