"""A robot run directory: plan.json, results.jsonl and report like the harness's, one unit at a time.

Rerunning the same command with the same directory resumes: finished evaluations are kept, a
unit cut short resumes from its checkpoint and journal (see ``robot.unit``), and a different plan
is refused, naming the first difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sim2real import zoo
from sim2real.checks import check_positive
from sim2real.experiment.plan import PolicyBlob
from sim2real.experiment.run_directory import PLAN_FILE, RESULTS_FILE, claim_run_directory, exclusive, read_results
from sim2real.experiment.run_files import EvaluationRecord, RunFileError, read_plan
from sim2real.records import JsonlWriter
from sim2real.robot.plan import RobotPlan, unit_key
from sim2real.robot.report import write_robot_report
from sim2real.robot.unit import SUMMARY_FILE, UnitRun, run_robot_unit
from sim2real.testbed.credentials import Credentials

UNITS_DIR = "units"


def unit_directory(out: Path, key: str) -> Path:
    """Where a unit keeps its journal, checkpoint and evaluation episodes."""
    return out / UNITS_DIR / key.replace("/", "__")


def run_on_testbed(plan: RobotPlan, out_dir: str | Path, *, credentials: Credentials | None = None,
                   reconnect_timeout: float = 120.0, step_timeout: float = 2.0,
                   on_record: Callable[[EvaluationRecord], None] | None = None) -> Path:
    """Run the plan's units on the robot into `out_dir` (resuming it), then write the report."""
    check_positive("reconnect_timeout", reconnect_timeout, "seconds")
    check_positive("step_timeout", step_timeout, "seconds")
    out = Path(out_dir)
    blob = PolicyBlob.read(plan.policy)

    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out):
        claim_run_directory(out, plan.to_record(blob.sha256))
        results = out / RESULTS_FILE
        records = read_results(results) if results.exists() else []
        pretrained = zoo.load_policy(plan.policy)
        with JsonlWriter(results) as writer:
            for strategy, seed in plan.units():
                key = unit_key(strategy, seed)
                done = {r.steps for r in records if r.unit == key}
                if done >= set(plan.steps):
                    continue

                def record(line: EvaluationRecord) -> None:
                    writer.write(line.to_json())
                    writer.fsync()
                    if on_record is not None:
                        on_record(line)

                run = UnitRun(plan, strategy, seed, unit_directory(out, key), credentials, reconnect_timeout,
                              step_timeout)
                run_robot_unit(run, pretrained, done, record)
        write_robot_run_report(out)
    return out


def is_robot_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a robot run (its plan names a testbed)."""
    path = Path(run_dir) / PLAN_FILE
    try:
        return path.is_file() and read_plan(path).testbed is not None
    except RunFileError:
        return False


def write_robot_run_report(out: Path) -> dict[str, Path]:
    """(Re)write the report of a robot run directory from its plan, results and unit summaries."""
    plan = read_plan(out / PLAN_FILE)
    records = read_results(out / RESULTS_FILE)
    units = {}
    for key in plan.units:
        path = unit_directory(out, key) / SUMMARY_FILE
        if path.exists():
            units[key] = json.loads(path.read_text())
    return write_robot_report(out, plan, records, units)
