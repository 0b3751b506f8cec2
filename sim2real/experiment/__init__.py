"""Transfer experiments: a plan of (target, strategy, seed) units against scratch, run resumably, then reported.

The names a user needs are here (``make_plan``, ``run``, ``write_run_report``, ...), imported on
first use (PEP 562): a unit's worker imports ``experiment.unit`` alone and pays for no plotting or
statistics. Where each part lives: ``plan`` (what a run is), ``unit`` (one unit, as a worker runs
it), ``harness`` (running them), ``run_directory`` and ``run_files`` (the run on disk), ``gap``
(zero-shot gap and advice), ``curves`` → ``summary`` → ``report`` (the numbers and the report).
"""

from __future__ import annotations

from sim2real.lazy import lazy_names

_LAZY = {
    "BASELINE": "sim2real.experiment.plan",
    "HarnessError": "sim2real.experiment.plan",
    "Plan": "sim2real.experiment.plan",
    "make_plan": "sim2real.experiment.plan",
    "Progress": "sim2real.experiment.harness",
    "run": "sim2real.experiment.harness",
    "GAP_FILE": "sim2real.experiment.run_directory",
    "MODELS_DIR": "sim2real.experiment.run_directory",
    "PLAN_FILE": "sim2real.experiment.run_directory",
    "RESULTS_FILE": "sim2real.experiment.run_directory",
    "UNITS_FILE": "sim2real.experiment.run_directory",
    "holds_another_plan": "sim2real.experiment.run_directory",
    "write_run_report": "sim2real.experiment.run_directory",
    "EvaluationRecord": "sim2real.experiment.run_files",
    "PlanRecord": "sim2real.experiment.run_files",
    "model_path": "sim2real.experiment.unit",
    "recommend": "sim2real.experiment.gap",
    "zero_shot_gap": "sim2real.experiment.gap",
    "summarize": "sim2real.experiment.summary",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
