"""What one transfer lever did on one far target: reached the threshold or not, and at what cost in target steps.

Each function turns one measurement (a zero-shot evaluation, a harness report, the transductive
loop's summary, a robot run's report) into a `LeverResult`, the row the demo's page and the
README's demo section are written from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sim2real.experiment.summary import format_aggregate
from sim2real.formatting import percent
from sim2real.transfer.strategies import parse_strategy

LEVERS = {
    "nominal": "no transfer (nominal policy)",
    "randomized": "randomized pretraining",
    "retraining": "partial retraining",
    "transductive": "fitted simulator (no target reward)",
    "testbed": "on the testbed",
}
"""The levers in the order the page shows them, with their column titles."""

NOUNS = {
    "nominal": "the nominal policy",
    "randomized": "randomized pretraining",
    "retraining": "partial retraining",
    "transductive": "the fitted simulator",
    "testbed": "adaptation on the testbed",
}
"""Each lever as the page's sentences name it."""


@dataclass(frozen=True)
class LeverResult:
    """One lever on one target: `success` reached, whether it met the threshold, the target steps it took.

    `target_steps` is 0 for a policy that meets the threshold zero-shot and None when the lever did
    not meet it; `detail` is the page's cell, in words and numbers. A lever trained over several
    seeds met the threshold when most seeds did; `seeds` then says how many ("2 of 3 seeds") and
    `gain` how much sooner than scratch.
    """

    target: str
    lever: str
    method: str
    success: float
    reached: bool
    target_steps: int | None
    detail: str
    seeds: str = ""
    gain: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for demo.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeverResult:
        """A result read back from demo.json."""
        steps = data["target_steps"]
        return cls(str(data["target"]), str(data["lever"]), str(data["method"]), float(data["success"]),
                   bool(data["reached"]), None if steps is None else int(steps), str(data["detail"]),
                   str(data.get("seeds", "")), str(data.get("gain", "")))


def kilo(steps: float) -> str:
    """Target steps as people read them in a table: 6.0k, 800."""
    return f"{steps / 1000:.1f}k" if steps >= 1000 else f"{steps:.0f}"


def zero_shot_lever(target: str, lever: str, policy: str, success: float, episodes: int,
                    threshold: float) -> LeverResult:
    """A shipped policy evaluated on the target as it is: no target step spent."""
    reached = success >= threshold
    return LeverResult(target, lever, f"{policy}, zero-shot", success, reached, 0 if reached else None,
                       f"{percent(success)} over {episodes} episodes, no target step")


def retraining_lever(target: str, policy: str, strategy: str, report: Mapping[str, Any]) -> LeverResult:
    """The harness's best trained strategy (`strategy` as the case spells it) against scratch.

    Steps to the threshold (IQM [CI]) and the gain over scratch.
    """
    threshold = report["threshold"]["value"]
    budget = report["budget"]
    data = report["strategies"][parse_strategy(strategy).name]
    scratch = report["strategies"]["scratch"]
    seeds = data["seeds"]
    reached_seeds = seeds - data["time_to_threshold"]["censored"]
    final = data["final"][report["metric"]]["iqm"]
    gain = f"sample-efficiency gain over scratch {format_aggregate(data, 'sample_efficiency_gain', '×')}"
    detail = (f"{strategy} from {policy}: {percent(threshold)} {steps_to(data, budget)}, {percent(final)} at "
              f"{kilo(budget)}{fell(data)}; scratch: {percent(threshold)} {steps_to(scratch, budget)}{fell(scratch)}; "
              f"{gain}")
    reached = majority_reached(data)
    return LeverResult(target, "retraining", f"{strategy} from {policy}", final, reached,
                       round(data["time_to_threshold"]["iqm"]) if reached else None, detail,
                       f"{reached_seeds} of {seeds} seeds", gain)


def fell(data: Mapping[str, Any]) -> str:
    """ " (its IQM curve fell to X % at N after reaching the threshold)" for a curve the report calls collapsed."""
    held = data.get("hold")
    if not held or not held["collapsed"]:
        return ""
    return f" (its IQM curve fell to {percent(held['lowest'])} at {kilo(held['lowest_at'])} after reaching it)"


def majority_reached(data: Mapping[str, Any]) -> bool:
    """Whether most of a strategy's seeds reached the threshold within the budget (its IQM time is then a time)."""
    return 2 * (data["seeds"] - data["time_to_threshold"]["censored"]) > data["seeds"]


def steps_to(data: Mapping[str, Any], budget: int) -> str:
    """ "after <IQM> [CI] (k of n seeds)" to the threshold, or "not reached by <budget>" when no seed got there."""
    reached = data["time_to_threshold"]
    seeds = data["seeds"]
    if reached["censored"] == seeds:
        return f"not reached by {kilo(budget)}"
    low, high = reached["ci"] or (reached["iqm"], reached["iqm"])
    return f"after {kilo(reached['iqm'])} [{kilo(low)}, {kilo(high)}] ({seeds - reached['censored']} of {seeds} seeds)"


def transductive_lever(target: str, policy: str, summary: Mapping[str, Any], threshold: float,
                       episodes: int) -> LeverResult:
    """The record → fit → fine-tune loop: the adapted policy's success, paid for with the recorded target steps."""
    before, after = summary["success"]["pretrained"], summary["success"]["adapted"]
    recorded = int(summary["target_steps_used"])
    reached = after >= threshold
    detail = (f"{percent(before)} → {percent(after)} over {episodes} episodes, from {recorded:,} recorded target "
              f"steps (no reward used)")
    return LeverResult(target, "transductive", f"sysid_finetune from {policy}", after, reached,
                       recorded if reached else None, detail)


def testbed_lever(target: str, policy: str, strategy: str, unit: Mapping[str, Any], threshold: float) -> LeverResult:
    """A robot run's unit: its curve on the served stand-in, the steps and robot minutes to the threshold."""
    steps, values = unit["curve"]["steps"], unit["curve"]["success"]
    curve = ", ".join(f"{percent(value)} at {kilo(step)}" for step, value in zip(steps, values, strict=True))
    reached_at = unit["time_to_threshold"]
    minutes = unit.get("robot_minutes") or {}
    spent = f"robot minutes: {minutes.get('train', '—')} training, {minutes.get('eval', '—')} evaluating"
    reached_text = ("not reached" if reached_at is None else
                    f"{percent(threshold)} after {reached_at:,} steps = {unit['robot_minutes_to_threshold']} robot-min")
    detail = f"{strategy} from {policy}: {curve}; {reached_text}; {spent}"
    return LeverResult(target, "testbed", f"{strategy} from {policy}", values[-1], reached_at is not None,
                       reached_at, detail, "1 seed")
