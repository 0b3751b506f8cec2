"""The demo's page (index.md) and the README's demo section: levers × far targets, one sentence per target.

Both are rendered from a `DemoSummary` (demo.json) and the tasks' thresholds, so the README's
numbers are those of a demo run, and tests/test_readme.py renders the section again from the run
it was taken from (docs/demo/demo.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sim2real import catalog
from sim2real.demo.levers import LEVERS, NOUNS, LeverResult, kilo
from sim2real.demo.summary import DemoSummary
from sim2real.formatting import percent

PAGE = "index.md"
"""The page a person reads first, in the demo's folder."""

RANKED = ("nominal", "randomized", "retraining", "transductive")
"""The levers that compete for "won": the testbed run is one seed of a strategy the harness also measures."""


def targets_in(summary: DemoSummary) -> list[dict[str, Any]]:
    """The far targets the run measured, as its settings record them (task, target, policies, budgets)."""
    return list(summary.settings["far_targets"])


def cost(result: LeverResult) -> str:
    """What reaching the threshold cost in target steps, in words."""
    if result.target_steps == 0:
        return "with no target step"
    if result.lever == "transductive":
        return f"from {result.target_steps:,} recorded target steps"
    if result.lever == "testbed":
        return f"after {result.target_steps:,} robot steps ({result.seeds})"
    return (f"after {kilo(result.target_steps or 0)} target steps (IQM over seeds, a seed that never got there "
            f"counted at the budget; {result.seeds} got there)")


def reaching(result: LeverResult) -> str:
    """How a lever met the threshold: the level of a policy evaluated once, the cost for one that trained."""
    if result.lever in ("retraining", "testbed"):
        return f"reached the threshold {cost(result)}"
    return f"reached {percent(result.success)} {cost(result)}"


def target_sentence(target: str, results: Sequence[LeverResult], threshold: float) -> str:
    """Which lever won on `target` (the fewest target steps to the threshold) and by how much, in one sentence."""
    nominal = next(r for r in results if r.lever == "nominal")
    baseline = f"{nominal.method.removesuffix(', zero-shot')} scores {percent(nominal.success)} zero-shot"
    reached = sorted((r for r in results if r.reached), key=lambda r: (r.lever not in RANKED, r.target_steps or 0,
                                                                       -r.success))
    if not reached or reached[0].lever not in RANKED:
        best = max((r for r in results if r.lever in RANKED), key=lambda r: r.success)
        sentence = (f"**{target}**: no lever reached {percent(threshold)} within these budgets; the best was "
                    f"{NOUNS[best.lever]} ({best.method}) at {percent(best.success)}; {baseline}")
        others = reached
    else:
        winner, others = reached[0], reached[1:]
        sentence = (f"**{target}**: {NOUNS[winner.lever]} won — {winner.method} {reaching(winner)}"
                    f"{', ' + winner.gain if winner.gain else ''}; {baseline}")
    if others:
        sentence += "; the threshold was also reached by " + ", ".join(
            f"{NOUNS[r.lever]} ({r.method}, {cost(r)})" for r in others)
    return sentence + "."


def levers_table(summary: DemoSummary) -> list[str]:
    """Markdown rows: one per far target, one column per lever; a lever that reached the threshold is ticked."""
    lines = ["| target | " + " | ".join(LEVERS.values()) + " |", "|---" * (len(LEVERS) + 1) + "|"]
    for case in targets_in(summary):
        cells = []
        for lever in LEVERS:
            result = next((r for r in summary.levers if r.target == case["target"] and r.lever == lever), None)
            if result is None:
                reason = case.get("why_no_transductive") if lever == "transductive" else ""
                cells.append(f"not run: {reason}" if reason else "—")
            else:
                cells.append(f"**✓** {result.detail}" if result.reached else result.detail)
        lines.append(f"| {case['target']} ({case['task']}) | " + " | ".join(cells) + " |")
    return lines


def threshold_of(task: str) -> float:
    """The task's success threshold, the line every lever is judged against."""
    return catalog.load(task).threshold.value


def story(summary: DemoSummary) -> list[str]:
    """The sentences per target and the levers table, shared by the page and the README."""
    lines = []
    for case in targets_in(summary):
        results = [r for r in summary.levers if r.target == case["target"]]
        lines += [target_sentence(case["target"], results, threshold_of(case["task"])), ""]
    return lines + levers_table(summary)


def seeds_line(summary: DemoSummary) -> str:
    """The seeds and budgets behind every number, in one line."""
    settings = summary.settings
    parts = [f"zero-shot over {settings['zero_shot_episodes']} episodes"]
    for case in settings["far_targets"]:
        retraining = case["retraining"]
        parts.append(f"{case['target']}: harness seeds 0–{retraining['seeds'] - 1}, {kilo(retraining['budget'])} "
                     f"target steps, evaluated every {kilo(retraining['eval_every'])} on {retraining['episodes']} "
                     f"episodes")
        if case.get("transductive"):
            parts.append(f"{case['target']} fitted simulator: seed 0, `{case['transductive']['strategy']}`, "
                         f"{case['transductive']['eval_episodes']} evaluation episodes")
    testbed = settings.get("testbed")
    if testbed:
        parts.append(f"testbed: seed 0, {kilo(testbed['budget'])} robot steps, evaluated every "
                     f"{kilo(testbed['eval_every'])} on {testbed['episodes']} episodes")
    return "Seeds and budgets: " + "; ".join(parts) + "."


def render_page(summary: DemoSummary) -> str:
    """index.md: the story, the table, the curves with the threshold line, the GIFs, links to every run's report."""
    cases = targets_in(summary)
    lines = ["# sim2real demo: which transfer lever wins on each far target", "",
             f"Finished in {summary.timing()}, {summary.wall_seconds / 60:.1f} min"
             f"{', resumed from an earlier run' if summary.resumed else ''}. Threshold: "
             f"{percent(threshold_of(cases[0]['task']))} success. {seeds_line(summary)}", "", *story(summary), ""]
    for case in cases:
        run = summary.runs.get(case["target"])
        if run is None:
            continue
        lines += [f"## {case['target']}: partial retraining against scratch", "",
                  f"![learning curves on {case['target']}, IQM with 95 % CI and the threshold]({run}/curves.png)", "",
                  f"Report: [{run}/report.md]({run}/report.md)."]
        gifs = [gif for gif in summary.gifs if f"-{case['target']}-" in gif]
        if gifs:
            lines += ["", "Before and after: " + " ".join(f"![{gif}]({gif})" for gif in gifs)]
        lines.append("")
    if "testbed" in summary.runs:
        run = summary.runs["testbed"]
        lines += ["## On the testbed", "",
                  f"![curve on the testbed]({run}/curves.png)", "",
                  f"Report (robot minutes, the control rate kept): [{run}/report.md]({run}/report.md).", ""]
    sysid = [summary.runs[f"{case['target']}-sysid"] for case in cases if f"{case['target']}-sysid" in summary.runs]
    if sysid:
        lines += ["## Fitted simulator", "", "Summaries: " + ", ".join(f"[{s}/summary.json]({s}/summary.json)"
                                                                       for s in sysid), ""]
    return "\n".join(lines)


def render_readme_section(summary: DemoSummary) -> str:
    """The README's demo section, between its markers: time, seeds, the story and the table of one demo run."""
    return "\n".join([f"The demo run these numbers come from took {summary.wall_seconds / 60:.1f} min on this 2-core "
                      f"machine. {seeds_line(summary)}", "", *story(summary)])
