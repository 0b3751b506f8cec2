"""The transfer report: per-seed metrics against scratch, aggregated over seeds, written for people.

:func:`summarize` turns the evaluation records of a transfer run (``results.jsonl``) into the
``report.json`` structure: each strategy's curve is compared with the ``scratch`` curve of the
same target and seed, and every metric is then aggregated over seeds as an IQM with a 95%
stratified-bootstrap CI (targets are the strata). :func:`write_report` writes ``report.json``,
``report.md``, ``curves.png`` and ``gain.png`` into the run directory, each atomically.
"""

from __future__ import annotations

import io
import json
import logging
import platform
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from sim2real.catalog import Threshold
from sim2real.errors import Sim2RealError, allowed
from sim2real.evaluation import metrics
from sim2real.evaluation.plan import BASELINE
from sim2real.evaluation.stats import Aggregate, aggregate, negative_transfer, probability_of_improvement
from sim2real.formatting import count
from sim2real.records import PathLike, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)


RECORD_KEYS = ("strategy", "seed", "target", "steps", "success", "return")
CURVE_METRICS = ("success", "return")
GAIN_KINDS: tuple[metrics.GainKind, ...] = ("exact", "lower_bound", "upper_bound", "undetermined")
_AXIS_LABELS = {"success": "success rate", "return": "mean return"}
_VERSION_PACKAGES = {"sim2real": "sim2real", "stable-baselines3": "stable_baselines3", "torch": "torch",
                     "gymnasium": "gymnasium"}


@dataclass(frozen=True)
class Curve:
    """One unit's learning curve: evaluation steps with the success rate and mean return at each."""

    steps: np.ndarray
    success: np.ndarray
    returns: np.ndarray

    def values(self, metric: str) -> np.ndarray:
        """The curve of `metric` ("success" or "return")."""
        return self.success if metric == "success" else self.returns

    @property
    def first_interval(self) -> float | None:
        """Steps between the first two evaluations (None for a single evaluation)."""
        return float(self.steps[1] - self.steps[0]) if self.steps.size > 1 else None


def _number(record: Mapping[str, Any], key: str, index: int) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise Sim2RealError(f"record {index}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _check_record(record: Any, index: int) -> tuple[str, str, int]:
    """The (strategy, target, seed) of a valid evaluation record, or an error naming what is wrong."""
    if not isinstance(record, Mapping):
        raise Sim2RealError(f"record {index} must be a mapping with keys {allowed(RECORD_KEYS)}, "
                            f"got {record!r}")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise Sim2RealError(f"record {index} lacks {allowed(missing)} "
                            f"(each record needs {allowed(RECORD_KEYS)})")
    strategy, target, seed = record["strategy"], record["target"], record["seed"]
    if not isinstance(strategy, str) or not isinstance(target, str):
        raise Sim2RealError(f"record {index}: 'strategy' and 'target' must be strings, "
                            f"got {strategy!r}, {target!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise Sim2RealError(f"record {index}: 'seed' must be an integer, got {seed!r}")
    for key in ("steps", "success", "return"):
        _number(record, key, index)
    return strategy, target, seed


def final_updates(records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, int], int | None]:
    """Gradient updates each unit had made by its last evaluation (None where the records do not say)."""
    last: dict[tuple[str, str, int], tuple[float, int | None]] = {}
    for record in records:
        unit = (record["strategy"], record["target"], record["seed"])
        if unit not in last or record["steps"] >= last[unit][0]:
            last[unit] = (record["steps"], record.get("updates"))
    return {unit: made for unit, (_, made) in last.items()}


def group_curves(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int], Curve]:
    """One curve per (strategy, target, seed), in order of first appearance; a repeated step keeps the last.

    A unit rerun after a crash appends its evaluations again, so the later record of a step wins.
    """
    points: dict[tuple[str, str, int], dict[float, tuple[float, float]]] = {}
    for index, record in enumerate(records):
        unit = _check_record(record, index)
        steps = _number(record, "steps", index)
        point = (_number(record, "success", index), _number(record, "return", index))
        points.setdefault(unit, {})[steps] = point
    curves = {}
    for unit, by_step in points.items():
        steps = np.array(sorted(by_step))
        values = np.array([by_step[step] for step in steps]).reshape(-1, 2)
        metrics.check_curve(steps, values[:, 0])
        curves[unit] = Curve(steps, values[:, 0], values[:, 1])
    return curves


def _check_threshold(threshold: Threshold) -> None:
    if threshold.metric not in CURVE_METRICS:
        raise Sim2RealError(f"unknown threshold metric '{threshold.metric}' "
                            f"(allowed: {allowed(CURVE_METRICS)})")
    if not np.isfinite(threshold.value):
        raise Sim2RealError(f"threshold value must be finite, got {threshold.value}")


def ratio_floor(threshold: Threshold) -> float:
    """Transfer-ratio denominator floor: 1% of the threshold's scale (at least 0.01), in the curve's units."""
    return metrics.RATIO_FLOOR * max(abs(threshold.value), 1.0)


def _seed_metrics(curve: Curve, base: Curve, threshold: Threshold, budget: float, last_k: int,
                  floor: float) -> dict[str, Any]:
    """Every metric of one strategy unit against the scratch unit of the same target and seed."""
    values, base_values = curve.values(threshold.metric), base.values(threshold.metric)
    auc = metrics.area_under_curve(curve.steps, values)
    base_auc = metrics.area_under_curve(base.steps, base_values)
    time = metrics.time_to_threshold(curve.steps, values, threshold.value, budget)
    base_time = metrics.time_to_threshold(base.steps, base_values, threshold.value, budget)
    intervals = [i for i in (curve.first_interval, base.first_interval) if i is not None]
    gain = metrics.sample_efficiency_gain(base_time.steps, base_time.censored, time.steps, time.censored,
                                          eval_interval=min(intervals, default=budget))
    last_k = min(last_k, values.size, base_values.size)
    return {
        "jumpstart": metrics.jumpstart(values, base_values),
        "asymptotic_gain": metrics.asymptotic_gain(values, base_values, last_k),
        "auc": auc,
        "scratch_auc": base_auc,
        "transfer_ratio": metrics.transfer_ratio(auc, base_auc, floor),
        "time_to_threshold": time.steps,
        "censored": time.censored,
        "sample_efficiency_gain": gain.value,
        "gain_kind": gain.kind,
        "final_success": float(curve.success[-1]),
        "final_return": float(curve.returns[-1]),
    }


def _trivial(value: float) -> Aggregate:
    """An exact value with a point interval (the baseline compared with itself)."""
    return {"iqm": value, "ci": [value, value]}


MIN_SEEDS_FOR_CI = 2
"""With fewer seeds a strategy gets no confidence interval and no negative-transfer verdict: nothing to judge by."""


def _strategy_summary(name: str, rows: list[dict[str, Any]], rng_seed: int, confidence: float,
                      n_resamples: int, floor: float) -> dict[str, Any]:
    """Aggregate one strategy's per-seed rows; the baseline gets exact trivial relative metrics.

    With fewer than MIN_SEEDS_FOR_CI seeds every CI is None and the negative-transfer verdict is
    None (not judged); a gain undetermined on every seed (neither curve reached the threshold)
    has no value at all, rather than the 1× that stands in for it per seed.
    """
    strata = [row["target"] for row in rows]
    judged = len(rows) >= MIN_SEEDS_FOR_CI

    def agg(key: str) -> Aggregate:
        # One Generator per (strategy, metric): a CI does not change when other strategies are added.
        rng = np.random.default_rng([rng_seed, zlib.crc32(f"{name}/{key}".encode())])
        result = aggregate([row[key] for row in rows], strata=strata, rng=rng, confidence=confidence,
                           n_resamples=n_resamples)
        return result if judged else {"iqm": result["iqm"], "ci": None}

    baseline = name == BASELINE
    if baseline:
        relative = {"jumpstart": _trivial(0.0), "asymptotic_gain": _trivial(0.0),
                    "transfer_ratio": _trivial(0.0), "sample_efficiency_gain": _trivial(1.0),
                    "p_improvement": _trivial(0.5)}
    else:
        rng = np.random.default_rng([rng_seed, zlib.crc32(f"{name}/p_improvement".encode())])
        relative = {key: agg(key) for key in ("jumpstart", "asymptotic_gain", "transfer_ratio",
                                              "sample_efficiency_gain")}
        relative["p_improvement"] = probability_of_improvement(
            [row["auc"] for row in rows], [row["scratch_auc"] for row in rows], strata=(strata, strata),
            confidence=confidence, n_resamples=n_resamples, rng=rng)
        if not judged:
            relative["p_improvement"] = {"iqm": relative["p_improvement"]["iqm"], "ci": None}
    kinds = ["exact"] * len(rows) if baseline else [row["gain_kind"] for row in rows]
    gain = {**relative["sample_efficiency_gain"], "kinds": {kind: kinds.count(kind) for kind in GAIN_KINDS}}
    if kinds.count("undetermined") == len(rows):
        gain.update(iqm=None, ci=None)
    floored = 0 if baseline else sum(abs(row["scratch_auc"]) < floor for row in rows)
    ratio_ci = relative["transfer_ratio"]["ci"]
    made = [row["updates"] for row in rows if row.get("updates") is not None]
    fewest = min(made) if made else None
    return {
        "baseline": baseline,
        "seeds": len(rows),
        "jumpstart": relative["jumpstart"],
        "asymptotic_gain": relative["asymptotic_gain"],
        "transfer_ratio": relative["transfer_ratio"],
        "ratio_floored_seeds": int(floored),
        "time_to_threshold": {**agg("time_to_threshold"), "censored": sum(row["censored"] for row in rows)},
        "sample_efficiency_gain": gain,
        "p_improvement": relative["p_improvement"],
        "negative_transfer": None if ratio_ci is None or fewest == 0 else negative_transfer(ratio_ci),
        "fewest_updates": fewest,
        "auc": agg("auc"),
        "final": {"success": agg("final_success"), "return": agg("final_return")},
    }


def summarize(records: Iterable[Mapping[str, Any]], threshold: Threshold, budget: float, rng_seed: int = 0, *,
              last_k: int = 1, confidence: float = 0.95, n_resamples: int = 2000) -> dict[str, Any]:
    """The report.json structure: every metric per seed against scratch, then IQM + 95% CI per strategy.

    A strategy unit is paired with the scratch unit of the same target and seed; units without
    one are listed under "skipped". Metrics use the threshold's metric ("success" or "return");
    the asymptotic gain averages the last `last_k` evaluations (fewer when a curve is shorter).
    """
    _check_threshold(threshold)
    if not budget > 0:
        raise Sim2RealError(f"budget must be > 0 target steps, got {budget}")
    if last_k < 1:
        raise Sim2RealError(f"last_k must be >= 1, got {last_k}")
    records = list(records)
    curves = group_curves(records)
    updates = final_updates(records)
    if not any(unit[0] == BASELINE for unit in curves):
        found = sorted({unit[0] for unit in curves})
        raise Sim2RealError(f"no '{BASELINE}' runs among the records (strategies found: {allowed(found)}); "
                            f"every gain is measured against {BASELINE}")
    floor = ratio_floor(threshold)
    strategies: list[str] = list(dict.fromkeys(unit[0] for unit in curves))
    per_seed, skipped = [], []
    for (strategy, target, seed), curve in sorted(curves.items(), key=lambda item: (
            strategies.index(item[0][0]), item[0][1], item[0][2])):
        base = curves.get((BASELINE, target, seed))
        unit = {"strategy": strategy, "target": target, "seed": seed}
        if base is None:
            log.warning("no %s run for target %s, seed %d: %s skipped", BASELINE, target, seed, strategy)
            skipped.append(unit)
            continue
        try:
            per_seed.append({**unit, **_seed_metrics(curve, base, threshold, budget, last_k, floor),
                             "updates": updates.get((strategy, target, seed))})
        except Sim2RealError as error:
            raise Sim2RealError(f"{strategy} on {target}, seed {seed}: {error}") from error
    summaries = {}
    for name in strategies:
        rows = [row for row in per_seed if row["strategy"] == name]
        if rows:
            summaries[name] = _strategy_summary(name, rows, rng_seed, confidence, n_resamples, floor)
    if summaries.get(BASELINE, {}).get("fewest_updates") == 0:  # scratch never learnt: nothing to compare with
        for entry in summaries.values():
            entry["negative_transfer"] = None
    targets = list(dict.fromkeys(unit[1] for unit in curves))
    return {
        "target": targets[0] if len(targets) == 1 else targets,
        "metric": threshold.metric,
        "threshold": {"metric": threshold.metric, "value": float(threshold.value)},
        "budget": budget,
        "last_k": last_k,
        "ratio_floor": floor,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "rng_seed": rng_seed,
        "strategies": summaries,
        "per_seed": per_seed,
        "skipped": skipped,
    }


def negative_transfer_word(verdict: bool | None) -> str:
    """How a strategy's negative-transfer verdict reads in every table: YES, no, or not judged."""
    return {True: "YES", False: "no", None: "not judged"}[verdict]


def measured_verdict(summary: Mapping[str, Any]) -> str:
    """One sentence on what the measurement says of transfer here, to stand beside (and check) the zero-shot advice."""
    strategies = {name: entry for name, entry in summary["strategies"].items() if not entry["baseline"]}
    if not strategies:
        return ""
    stalled = [name for name, entry in summary["strategies"].items() if entry.get("fewest_updates") == 0]
    if stalled:
        return (f"Measured: {', '.join(stalled)} made no gradient update on at least one seed (the budget ended "
                f"first), so no verdict on transfer is drawn; give a larger budget.")
    if any(entry["negative_transfer"] is None for entry in strategies.values()):
        return (f"Measured: one seed per strategy, so no confidence interval and no verdict on negative transfer; "
                f"rerun with at least {MIN_SEEDS_FOR_CI} seeds before trusting a ranking.")
    flagged = [name for name, entry in strategies.items() if entry["negative_transfer"]]
    if flagged:
        return (f"Measured: {', '.join(flagged)} did reliably worse than {BASELINE} here (transfer-ratio CI wholly "
                f"below 0), whatever the zero-shot advice expected; do not use {'them' if len(flagged) > 1 else 'it'} "
                f"on this target.")
    better = [name for name, entry in strategies.items() if entry["transfer_ratio"]["ci"][0] > 0]
    if better:
        return f"Measured: {', '.join(better)} did reliably better than {BASELINE} here (transfer-ratio CI above 0)."
    return f"Measured: no strategy did reliably better or worse than {BASELINE} here (every transfer-ratio CI spans 0)."


def learning_curves(records: Iterable[Mapping[str, Any]], metric: str, rng_seed: int = 0, *,
                    confidence: float = 0.95, n_resamples: int = 2000) -> dict[str, dict[str, list[float]]]:
    """Per strategy and evaluation step: IQM over seeds with its CI (targets as strata), for plotting."""
    if metric not in CURVE_METRICS:
        raise Sim2RealError(f"unknown metric '{metric}' (allowed: {allowed(CURVE_METRICS)})")
    curves = group_curves(records)
    result: dict[str, dict[str, list[float]]] = {}
    for name in dict.fromkeys(unit[0] for unit in curves):
        units = [(unit[1], curve) for unit, curve in curves.items() if unit[0] == name]
        steps = sorted({float(step) for _, curve in units for step in curve.steps})
        series: dict[str, list[float]] = {"steps": steps, "iqm": [], "low": [], "high": []}
        for step in steps:
            at_step = [(target, curve.values(metric)[curve.steps == step][0])
                       for target, curve in units if (curve.steps == step).any()]
            rng = np.random.default_rng([rng_seed, zlib.crc32(f"{name}/curve/{step}".encode())])
            point = aggregate([value for _, value in at_step], strata=[target for target, _ in at_step],
                              rng=rng, confidence=confidence, n_resamples=n_resamples)
            series["iqm"].append(point["iqm"])
            series["low"].append(point["ci"][0])
            series["high"].append(point["ci"][1])
        result[name] = series
    return result


def package_versions() -> dict[str, str]:
    """Versions of sim2real, SB3, torch, gymnasium and python, for the report's settings section."""
    versions = {}
    for label, distribution in _VERSION_PACKAGES.items():
        try:
            versions[label] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[label] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def _num(value: float) -> str:
    """A number for people: thousands separators for large values, three significant digits otherwise."""
    if not np.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ci(entry: Aggregate, suffix: str = "") -> tuple[str, str]:
    """The point estimate (with its unit suffix) and the interval, formatted for a table; what is missing, said."""
    point = "undetermined" if entry["iqm"] is None else f"{_num(entry['iqm'])}{suffix}"
    interval = "no CI (1 seed)" if entry["ci"] is None else f"[{_num(entry['ci'][0])}, {_num(entry['ci'][1])}]"
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
         f"(AUC − AUC_scratch) / max(|AUC_scratch|, {_num(summary['ratio_floor'])})" + (
             f"; {entry['ratio_floored_seeds']} of {seeds} seeds: scratch's area under the floor, so a lower "
             f"bound" if entry.get("ratio_floored_seeds") else "")),
        ("time to threshold", entry["time_to_threshold"], " steps",
         f"{entry['time_to_threshold']['censored']} of {seeds} seeds censored at the budget"),
        ("sample-efficiency gain", entry["sample_efficiency_gain"], "×",
         _gain_note(entry["sample_efficiency_gain"], seeds)),
        ("P(improvement)", entry["p_improvement"], "", "P(AUC > scratch's AUC) + ½ P(tie)"),
        (f"mean level (AUC, {_AXIS_LABELS[metric]})", entry["auc"], "", "area under the curve / step span"),
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
        f"Threshold: {_AXIS_LABELS[threshold['metric']]} ≥ {_num(threshold['value'])} · "
        f"budget: {_num(summary['budget'])} target steps · "
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


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per strategy: black for scratch, grey for zero_shot, tab10 for the rest."""
    fixed = {BASELINE: "black", "zero_shot": "tab:gray"}
    palette = iter(("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan"))
    return {name: fixed.get(name) or next(palette, "tab:blue") for name in names}


def plot_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], summary: Mapping[str, Any]) -> bytes:
    """curves.png: IQM learning curve with CI band per strategy against target steps, threshold dashed."""
    threshold = summary["threshold"]
    colors = _colors(list(curves))
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    for name, series in curves.items():
        style = "--" if name == BASELINE else ":" if name == "zero_shot" else "-"
        axes.plot(series["steps"], series["iqm"], style, marker="o", markersize=3, color=colors[name],
                  label=name)
        axes.fill_between(series["steps"], series["low"], series["high"], color=colors[name], alpha=0.15,
                          linewidth=0)
    label = f"threshold ({_num(threshold['value'])})"
    axes.axhline(threshold["value"], color="crimson", linestyle="--", linewidth=1, label=label)
    axes.annotate(label, (0, threshold["value"]), xycoords=("axes fraction", "data"), xytext=(4, 3),
                  textcoords="offset points", color="crimson", fontsize="small")
    axes.set_xlabel("target environment steps")
    axes.xaxis.set_major_formatter(FuncFormatter(
        lambda value, _: f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"))
    axes.set_ylabel(_AXIS_LABELS[threshold["metric"]])
    target = summary["target"] if isinstance(summary["target"], str) else ", ".join(summary["target"])
    confidence = f"{summary['confidence']:.0%}"
    axes.set_title(f"Learning curves on {target} (IQM over seeds, {confidence} CI)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _png(figure)


def plot_gain(summary: Mapping[str, Any]) -> bytes:
    """gain.png: sample-efficiency gain per strategy, IQM with CI bars on a log scale, 1× marked."""
    entries = {name: entry for name, entry in summary["strategies"].items() if not entry["baseline"]}
    colors = _colors(list(summary["strategies"]))
    figure = Figure(figsize=(max(4.0, 1.2 * len(entries) + 2), 4.5), layout="constrained")
    axes = figure.add_subplot()
    markers = {"exact": ("o", "exact"), "lower_bound": ("^", "includes lower bounds (≥)"),
               "upper_bound": ("v", "includes upper bounds (≤)"), "undetermined": ("x", "undetermined")}
    shown = set()
    for x, (name, entry) in enumerate(entries.items()):
        gain = entry["sample_efficiency_gain"]
        kinds = gain["kinds"]
        kind = ("undetermined" if kinds["undetermined"] == entry["seeds"] else
                "lower_bound" if kinds["lower_bound"] else "upper_bound" if kinds["upper_bound"] else "exact")
        marker, label = markers[kind]
        if gain["iqm"] is None:  # no gain to draw: say so at the foot of the axes, away from the 1× line
            axes.annotate("undetermined:\nneither reached\nthe threshold", (x, 0.03),
                          xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize="small")
            continue
        ci = gain["ci"] or [gain["iqm"], gain["iqm"]]
        error = [[gain["iqm"] - ci[0]], [ci[1] - gain["iqm"]]]
        axes.errorbar([x], [gain["iqm"]], yerr=error, fmt=marker, markersize=9, capsize=5, color=colors[name],
                      markeredgecolor="black", label=None if kind in shown else label)
        shown.add(kind)
        value, seeds = f"{_num(gain['iqm'])}×", entry["seeds"]
        text = {"exact": value, "lower_bound": f"≥ {value} ({kinds['lower_bound']}/{seeds} seeds)",
                "upper_bound": f"≤ {value} ({kinds['upper_bound']}/{seeds} seeds)",
                "undetermined": "undetermined"}[kind]
        axes.annotate(text, (x, gain["iqm"]), textcoords="offset points", xytext=(10, 0), va="center",
                      fontsize="small")
    axes.axhline(1.0, color="black", linestyle="--", linewidth=1, label="1× (as scratch)")
    axes.set_yscale("log")
    times = FuncFormatter(lambda value, _: f"{value:g}×")
    axes.yaxis.set_major_formatter(times)
    axes.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    axes.yaxis.set_minor_formatter(times)
    # Keep 1× and every interval in view, with a margin in log space.
    ends = [1.0, *(bound for entry in entries.values()
                   for bound in (entry["sample_efficiency_gain"]["ci"] or [entry["sample_efficiency_gain"]["iqm"]] * 2)
                   if bound is not None)]
    low, high = min(ends), max(ends)
    pad = max((high / low) ** 0.08, 1.2)
    axes.set_ylim(low / pad, high * pad)
    axes.set_xticks(range(len(entries)), list(entries))
    axes.set_xlim(-0.6, max(len(entries), 1) - 0.4)
    axes.set_ylabel("sample-efficiency gain over scratch (×)")
    axes.set_title(f"Sample-efficiency gain over scratch\n(steps to threshold, IQM, {summary['confidence']:.0%} CI)",
                   fontsize="medium")
    axes.grid(alpha=0.3, which="both", axis="y")
    axes.legend(loc="best", fontsize="small")
    return _png(figure)


def write_report(run_dir: PathLike, summary: Mapping[str, Any], records: Iterable[Mapping[str, Any]],
                 settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write report.json (summary + settings), report.md, curves.png, gain.png into `run_dir`, atomically."""
    run_dir = Path(run_dir)
    curves = learning_curves(records, summary["metric"], summary["rng_seed"],
                             confidence=summary["confidence"], n_resamples=summary["n_resamples"])
    paths = {name: run_dir / name for name in ("report.json", "report.md", "curves.png", "gain.png")}
    write_json_atomic(paths["report.json"], {**summary, "settings": dict(settings)})
    write_bytes_atomic(paths["report.md"], render_markdown(summary, settings).encode("utf-8"))
    write_bytes_atomic(paths["curves.png"], plot_curves(curves, summary))
    write_bytes_atomic(paths["gain.png"], plot_gain(summary))
    return paths


def format_aggregate(metrics: Mapping[str, Any], name: str, unit: str = "") -> str:
    """`IQM [low, high]` of one aggregated metric for tables: "undetermined", "no CI" or "≥" where they apply."""
    value = metrics.get(name)
    if not isinstance(value, Mapping):
        return "—"
    if value.get("iqm") is None:
        return "undetermined"
    floored = name == "transfer_ratio" and metrics.get("ratio_floored_seeds")
    bound = "≥ " if floored or (value.get("kinds") or {}).get("lower_bound") else ""
    if value.get("ci") is None:
        return f"{bound}{value['iqm']:.2f}{unit} (1 seed, no CI)"
    low, high = value["ci"]
    return f"{bound}{value['iqm']:.2f}{unit} [{low:.2f}, {high:.2f}]"
