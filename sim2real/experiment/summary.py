"""The transfer summary: each strategy's per-seed metrics against scratch, aggregated over seeds, and its verdict.

:func:`summarize` turns the evaluation records of a transfer run (``results.jsonl``) into the
``report.json`` structure: each strategy's curve is compared with the ``scratch`` curve of the
same target and seed, and every metric is then aggregated over seeds as an IQM with a 95%
stratified-bootstrap CI (targets are the strata).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError, allowed
from sim2real.experiment import metrics
from sim2real.experiment.curves import CURVE_METRICS, Curve, final_updates, group_curves, iqm_curve
from sim2real.experiment.plan import BASELINE
from sim2real.experiment.run_files import EvaluationRecord, evaluation_records
from sim2real.experiment.stats import Aggregate, aggregate, negative_transfer, probability_of_improvement
from sim2real.formatting import number, percent
from sim2real.spec import Threshold

log = logging.getLogger(__name__)

GAIN_KINDS: tuple[metrics.GainKind, ...] = ("exact", "lower_bound", "upper_bound", "undetermined")


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


COLLAPSE_MARGIN = 0.15
"""How far below the threshold (a share of it for a return threshold, points of success) counts as a collapse."""


def hold(steps: np.ndarray, values: np.ndarray, threshold: Threshold) -> dict[str, Any] | None:
    """Whether a curve that reached the threshold stayed near it to the end of the budget (None: never reached).

    A curve that falls more than `COLLAPSE_MARGIN` below the threshold after first reaching it has
    collapsed: the policy at the end of the budget is not the one that got there.
    """
    reached = np.flatnonzero(values >= threshold.value)
    if not reached.size:
        return None
    first = int(reached[0])
    lowest = first + int(np.argmin(values[first:]))
    margin = COLLAPSE_MARGIN if threshold.metric == "success" else COLLAPSE_MARGIN * max(abs(threshold.value), 1.0)
    return {"reached_at": float(steps[first]), "lowest": float(values[lowest]), "lowest_at": float(steps[lowest]),
            "final": float(values[-1]), "collapsed": bool(values[lowest] < threshold.value - margin)}


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


def summarize(records: Iterable[EvaluationRecord | Mapping[str, Any]], threshold: Threshold, budget: float,
              rng_seed: int = 0, *, last_k: int = 1, confidence: float = 0.95,
              n_resamples: int = 2000) -> dict[str, Any]:
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
    records = evaluation_records(list(records))
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
            summaries[name]["hold"] = hold(*iqm_curve(curves, name, threshold.metric), threshold)
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


def collapse_sentences(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per strategy whose IQM curve reached the threshold and then collapsed (see `hold`)."""
    shown = percent if summary["metric"] == "success" else number
    sentences = []
    for name, entry in summary["strategies"].items():
        held = entry.get("hold")
        if held and held["collapsed"]:
            sentences.append(
                f"{name} reached {shown(summary['threshold']['value'])} at {number(held['reached_at'])} steps, then "
                f"fell to {shown(held['lowest'])} at {number(held['lowest_at'])} ({shown(held['final'])} at the end "
                f"of the budget): the policy at the end is not the one that got there")
    return sentences


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


GAIN_COLUMNS = ("strategy", "sample-efficiency gain", "transfer ratio", "jumpstart")
"""The columns every summary table of a transfer run starts with (terminal, report.md), in this order."""


def gain_cells(name: str, metrics: Mapping[str, Any]) -> list[str]:
    """One strategy's cells under `GAIN_COLUMNS`: its name, then each gain as `IQM [low, high]`."""
    return [name, format_aggregate(metrics, "sample_efficiency_gain", "×"), format_aggregate(metrics, "transfer_ratio"),
            format_aggregate(metrics, "jumpstart")]
