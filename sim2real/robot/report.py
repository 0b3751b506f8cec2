"""The report of a robot run: learning curves on the robot, robot minutes, the control rate kept.

A robot run has no scratch baseline (robot time is too scarce to spend on one), so it reports
what it can measure: each unit's success at every evaluation point, the training steps and robot
minutes until the threshold, and how the robot's time was spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim2real.experiment import metrics
from sim2real.experiment.curves import learning_curves
from sim2real.experiment.figures import plot_curves
from sim2real.experiment.run_files import EvaluationRecord, PlanRecord, RunFileError, read_json
from sim2real.records import write_bytes_atomic, write_json_atomic


@dataclass(frozen=True)
class RobotReport:
    """A robot run's report.json: the testbed, the threshold and budget, and per unit its curve and robot time."""

    testbed: str
    threshold: Mapping[str, Any]
    budget: int
    units: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The report.json content."""
        return {"testbed": self.testbed, "threshold": dict(self.threshold), "budget": self.budget,
                "units": {key: dict(unit) for key, unit in self.units.items()}}

    @classmethod
    def from_json(cls, data: Any, where: str) -> RobotReport:
        """Read back report.json content; an error naming `where` and what is missing."""
        keys = ("testbed", "threshold", "budget", "units")
        if not (isinstance(data, Mapping) and all(key in data for key in keys) and isinstance(data["units"], Mapping)):
            raise RunFileError(f"{where} is not a robot run's report (a JSON object with {', '.join(keys)})")
        return cls(data["testbed"], data["threshold"], data["budget"], data["units"])


def read_robot_report(path: Path) -> RobotReport:
    """The robot run's report.json at `path`, checked."""
    return RobotReport.from_json(read_json(path), str(path))


def summarize_robot_run(plan: PlanRecord, records: Sequence[EvaluationRecord],
                        units: Mapping[str, Mapping[str, Any]]) -> RobotReport:
    """report.json's content: per unit its curve, time to threshold (steps, robot minutes) and time budget."""
    metric = plan.threshold.metric
    report: dict[str, dict[str, Any]] = {}
    for key in plan.units:
        rows = sorted((r for r in records if r.unit == key and r.value(metric) is not None), key=lambda r: r.steps)
        if not rows:
            continue
        steps = [r.steps for r in rows]
        values = [r.value(metric) for r in rows]
        reached = metrics.time_to_threshold(steps, values, plan.threshold.value, plan.budget)
        unit = dict(units.get(key, {}))
        hz = unit.get("control_hz")
        report[key] = {
            "strategy": rows[0].strategy,
            "seed": rows[0].seed,
            "curve": {"steps": steps, metric: values},
            "complete": steps == list(plan.steps),
            "time_to_threshold": None if reached.censored else int(reached.steps),
            "robot_minutes_to_threshold": None if reached.censored or not hz else round(reached.steps / hz / 60, 2),
            **{k: v for k, v in unit.items() if k != "unit"},
        }
    assert plan.testbed is not None, "a robot run's plan names its testbed"
    return RobotReport(plan.testbed, {"metric": metric, "value": plan.threshold.value}, plan.budget, report)


def render_robot_markdown(summary: RobotReport, plan: PlanRecord) -> str:
    """report.md: one table of curves, one of robot time."""
    metric, value = summary.threshold["metric"], summary.threshold["value"]
    steps = plan.steps
    lines = [f"# Adapting {plan.policy} on the robot at {plan.testbed}", "",
             f"Task {plan.task}, threshold {metric} ≥ {value:g}; {plan.episodes} evaluation episodes at each "
             f"point; no scratch baseline on the robot.", "",
             "| unit | " + " | ".join(f"{s:,}" for s in steps) + " | steps to threshold | robot min to threshold |",
             "|---|" + "---|" * (len(steps) + 2)]
    for key, unit in summary.units.items():
        by_step = dict(zip(unit["curve"]["steps"], unit["curve"][metric], strict=True))
        cells = [f"{100 * by_step[s]:.0f} %" if metric == "success" and s in by_step else
                 (f"{by_step[s]:.3g}" if s in by_step else "—") for s in steps]
        reached = "not reached" if unit["time_to_threshold"] is None else f"{unit['time_to_threshold']:,}"
        minutes = unit["robot_minutes_to_threshold"]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {reached} | {'—' if minutes is None else minutes} |")
    lines += ["", "| unit | robot min training | robot min evaluating | control rate | step rate kept | "
              "stood still | updates | recoveries |", "|---|---|---|---|---|---|---|---|"]
    for key, unit in summary.units.items():
        minutes = unit.get("robot_minutes") or {}
        hz, kept = unit.get("control_hz"), unit.get("rate_kept")
        updates = f"{unit.get('updates', '—')} ({unit.get('update_debt', '—')} owed)"
        lines.append(f"| {key} | {minutes.get('train', '—')} | {minutes.get('eval', '—')} | "
                     f"{'not paced' if not hz else f'{hz:g} Hz'} | {'—' if kept is None else f'{100 * kept:.1f} %'} | "
                     f"{unit.get('stood_still_seconds', '—')} s | {updates} | "
                     f"{unit.get('recoveries', '—')} |")
    lines += ["", "Robot minutes are robot steps over the server's declared control rate; the step rate kept is "
              "the rate within episodes against that rate; the robot stood still for the rest of the run's span "
              "(resets, evaluation checkpoints, reconnects).", ""]
    return "\n".join(lines)


def write_robot_report(out: Path, plan: PlanRecord, records: Sequence[EvaluationRecord],
                       units: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """report.json, report.md and curves.png of a robot run directory."""
    summary = summarize_robot_run(plan, records, units)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "curves": out / "curves.png"}
    write_json_atomic(paths["json"], summary.to_json())
    write_bytes_atomic(paths["markdown"], render_robot_markdown(summary, plan).encode("utf-8"))
    metric = summary.threshold["metric"]
    curves = learning_curves([r for r in records if r.value(metric) is not None], metric)
    figure = {"threshold": summary.threshold, "target": f"the robot ({plan.testbed})", "confidence": 0.95}
    write_bytes_atomic(paths["curves"], plot_curves(curves, figure))
    return paths
