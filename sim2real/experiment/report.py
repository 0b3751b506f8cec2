"""The transfer report, written for people: report.json, report.md and the figures, each written atomically.

The numbers come from :func:`sim2real.experiment.summary.summarize`; :func:`write_report` writes
``report.json``, ``report.md``, ``curves.png`` and ``gain.png`` into the run directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sim2real.experiment.curves import AXIS_LABELS, learning_curves
from sim2real.experiment.figures import plot_curves, plot_gain
from sim2real.experiment.plan import BASELINE
from sim2real.experiment.run_files import EvaluationRecord, ReportRecord
from sim2real.experiment.stats import Aggregate
from sim2real.experiment.summary import COLLAPSE_MARGIN, collapse_sentences, negative_transfer_word
from sim2real.formatting import count, number
from sim2real.records import PathLike, write_bytes_atomic, write_json_atomic


def _ci(entry: Aggregate, suffix: str = "") -> tuple[str, str]:
    """The point estimate (with its unit suffix) and the interval, formatted for a table; what is missing, said."""
    point = "undetermined" if entry["iqm"] is None else f"{number(entry['iqm'])}{suffix}"
    interval = "no CI (1 seed)" if entry["ci"] is None else f"[{number(entry['ci'][0])}, {number(entry['ci'][1])}]"
    return point, interval


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _gain_note(entry: Mapping[str, Any], seeds: int) -> str:
    kinds = entry["kinds"]
    notes = []
    if kinds["lower_bound"]:
        notes.append(f"{kinds['lower_bound']} of {seeds} seeds are lower bounds (≥)")
    if kinds["upper_bound"]:
        notes.append(f"{kinds['upper_bound']} of {seeds} seeds are upper bounds (≤)")
    if kinds["undetermined"]:
        notes.append(f"{kinds['undetermined']} of {seeds} seeds undetermined (neither reached the threshold)")
    return "; ".join(notes) or "exact"


def _strategy_table(name: str, entry: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    seeds, metric = entry["seeds"], summary["metric"]
    last_k = summary["last_k"]
    rows = [
        ("jumpstart", entry["jumpstart"], "", "first evaluation − scratch's"),
        ("asymptotic gain", entry["asymptotic_gain"], "",
         "final evaluation − scratch's" if last_k == 1 else f"mean of last {last_k} evaluations − scratch's"),
        ("transfer ratio", entry["transfer_ratio"], "",
         f"(AUC − AUC_scratch) / max(|AUC_scratch|, {number(summary['ratio_floor'])})" + (
             f"; {entry['ratio_floored_seeds']} of {seeds} seeds: scratch's area under the floor, so a lower "
             f"bound" if entry.get("ratio_floored_seeds") else "")),
        ("time to threshold", entry["time_to_threshold"], " steps",
         f"{entry['time_to_threshold']['censored']} of {seeds} seeds censored at the budget"),
        ("sample-efficiency gain", entry["sample_efficiency_gain"], "×",
         _gain_note(entry["sample_efficiency_gain"], seeds)),
        ("P(improvement)", entry["p_improvement"], "", "P(AUC > scratch's AUC) + ½ P(tie)"),
        (f"mean level (AUC, {AXIS_LABELS[metric]})", entry["auc"], "", "area under the curve / step span"),
        ("final success rate", entry["final"]["success"], "", "last evaluation"),
        ("final mean return", entry["final"]["return"], "", "last evaluation"),
    ]
    title = f"### {name} ({count(seeds, 'seed')}{', baseline' if entry['baseline'] else ''})"
    lines = [title, "", "| metric | IQM | 95% CI | note |", "|---|---:|---:|---|"]
    for label, value, suffix, note in rows:
        point, interval = _ci(value, suffix)
        lines.append(f"| {label} | {point} | {interval} | {_cell(note)} |")
    if entry.get("fewest_updates") is not None:
        lines += ["", f"Gradient updates: at least {entry['fewest_updates']:,} on every seed"
                      + (" — **none on some seed: the budget ended before the first, no verdict drawn**"
                         if entry["fewest_updates"] == 0 else "") + "."]
    if entry["negative_transfer"]:
        lines.append("")
        lines.append("**⚠️ NEGATIVE TRANSFER: the whole CI of the transfer ratio is below 0.**")
    return [*lines, ""]


def render_markdown(summary: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """report.md: headline, negative-transfer warning, recommendation, tables, figures, settings, versions."""
    strategies: Mapping[str, Mapping[str, Any]] = summary["strategies"]
    threshold = summary["threshold"]
    target = summary["target"] if isinstance(summary["target"], str) else ", ".join(summary["target"])
    confidence = f"{summary['confidence']:.0%}"
    lines = [
        f"# Transfer report: {target}",
        "",
        f"Threshold: {AXIS_LABELS[threshold['metric']]} ≥ {number(threshold['value'])} · "
        f"budget: {number(summary['budget'])} target steps · "
        f"every value is the IQM over seeds with its {confidence} stratified-bootstrap CI, "
        f"each strategy paired seed by seed with `{BASELINE}`.",
        "",
    ]
    flagged = [name for name, entry in strategies.items() if entry["negative_transfer"]]
    if flagged:
        lines += ["## ⚠️ WARNING: NEGATIVE TRANSFER ⚠️", "",
                  "> **These strategies do reliably worse on this target than training from scratch**: "
                  f"the {confidence} CI of their transfer ratio lies wholly below 0. Starting from the "
                  "pretrained policy hurts here; do not use them on this target without investigating why.",
                  ">"]
        for name in flagged:
            point, interval = _ci(strategies[name]["transfer_ratio"])
            lines.append(f"> - **{name}**: transfer ratio {point} {interval}")
        lines.append("")
    collapsed = collapse_sentences(summary)
    if collapsed:
        margin = (f"{100 * COLLAPSE_MARGIN:.0f} points" if threshold["metric"] == "success"
                  else f"{COLLAPSE_MARGIN:.0%} of the threshold")
        lines += ["## ⚠️ WARNING: CURVES THAT COLLAPSE ⚠️", "",
                  "> **These strategies reached the threshold and then lost it** (their IQM curve fell more than "
                  f"{margin} below it): compare them by when they got there, not by where they ended, "
                  "and do not deploy the final policy without evaluating it.", ">"]
        lines += [f"> - {sentence}." for sentence in collapsed]
        lines.append("")
    if settings.get("recommendation"):
        lines += ["## Recommendation", "", str(settings["recommendation"]), ""]
    lines += ["## Summary", "",
              "| strategy | seeds | sample-efficiency gain | transfer ratio | P(improvement) "
              "| negative transfer |",
              "|---|---:|---:|---:|---:|---|"]
    for name, entry in strategies.items():
        gain = entry["sample_efficiency_gain"]
        bound = "≥ " if gain["kinds"]["lower_bound"] and gain["iqm"] is not None else ""
        gain_point, gain_ci = _ci(gain, "×")
        ratio_point, ratio_ci = _ci(entry["transfer_ratio"])
        ratio_point = f"≥ {ratio_point}" if entry.get("ratio_floored_seeds") else ratio_point
        poi_point, poi_ci = _ci(entry["p_improvement"])
        warning = "**YES ⚠️**" if entry["negative_transfer"] else negative_transfer_word(entry["negative_transfer"])
        lines.append(f"| {name} | {entry['seeds']} | {bound}{gain_point} {gain_ci} "
                     f"| {ratio_point} {ratio_ci} | {poi_point} {poi_ci} | {warning} |")
    lines += ["", "## Per strategy", ""]
    for name, entry in strategies.items():
        lines += _strategy_table(name, entry, summary)
    if summary.get("skipped"):
        units = ", ".join(f"{u['strategy']}/{u['target']}/seed {u['seed']}" for u in summary["skipped"])
        lines += [f"Skipped (no `{BASELINE}` run of the same target and seed): {units}.", ""]
    lines += ["## Figures", "", "![Learning curves](curves.png)", "",
              "![Sample-efficiency gain](gain.png)", ""]
    plain = {key: value for key, value in settings.items() if key not in ("versions", "recommendation")}
    if plain:
        lines += ["## Settings", "", "| setting | value |", "|---|---|"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in plain.items()]
        lines.append("")
    if settings.get("versions"):
        lines += ["## Versions", "", "| package | version |", "|---|---|"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in settings["versions"].items()]
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir: PathLike, summary: Mapping[str, Any],
                 records: Iterable[EvaluationRecord | Mapping[str, Any]],
                 settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write report.json (summary + settings), report.md, curves.png, gain.png into `run_dir`, atomically."""
    run_dir = Path(run_dir)
    curves = learning_curves(records, summary["metric"], summary["rng_seed"],
                             confidence=summary["confidence"], n_resamples=summary["n_resamples"])
    paths = {name: run_dir / name for name in ("report.json", "report.md", "curves.png", "gain.png")}
    write_json_atomic(paths["report.json"], ReportRecord(summary, settings).to_json())
    write_bytes_atomic(paths["report.md"], render_markdown(summary, settings).encode("utf-8"))
    write_bytes_atomic(paths["curves.png"], plot_curves(curves, summary))
    write_bytes_atomic(paths["gain.png"], plot_gain(summary))
    return paths
