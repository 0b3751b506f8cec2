"""The transfer report on synthetic evaluation records: hand-computed numbers, files, warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim2real.errors import Sim2RealError
from sim2real.experiment.report import write_report
from sim2real.experiment.summary import format_aggregate, measured_verdict, summarize
from sim2real.provenance import versions
from sim2real.spec import Threshold

STEPS = [0, 10, 20]
BUDGET = 20
THRESHOLD = Threshold("success", 0.5)
CURVES = {
    "zero_shot": [0.5, 0.5, 0.5],  # AUC 0.5, already at the threshold at step 0
    "good": [0.5, 1.0, 1.0],  # AUC (7.5 + 10) / 20 = 0.875, at the threshold at step 0
    "bad": [0.0, 0.0, 0.25],  # AUC 1.25 / 20 = 0.0625, never reaches the threshold
    "scratch": [0.0, 0.5, 1.0],  # AUC (2.5 + 7.5) / 20 = 0.5, reaches it at step 10
}


def records(curves=CURVES, seeds=(0, 1, 2), target="icy", noise=0.0, rng=None):
    out = []
    for seed in seeds:
        for strategy, values in curves.items():
            jitter = rng.normal(0, noise, len(values)) if noise else np.zeros(len(values))
            for step, value in zip(STEPS, np.clip(np.add(values, jitter), 0, 1), strict=True):
                out.append({"strategy": strategy, "seed": seed, "target": target, "steps": step,
                            "success": float(value), "return": float(100 * value)})
    return out


def point(value):
    return {"iqm": pytest.approx(value), "ci": [pytest.approx(value), pytest.approx(value)]}


def test_summary_matches_hand_computed_metrics():
    summary = summarize(records(), THRESHOLD, BUDGET)
    assert summary["target"] == "icy"
    assert summary["threshold"] == {"metric": "success", "value": 0.5}
    assert summary["budget"] == BUDGET
    assert list(summary["strategies"]) == ["zero_shot", "good", "bad", "scratch"]
    strategies = summary["strategies"]
    good, bad, zero, scratch = (strategies[name] for name in ("good", "bad", "zero_shot", "scratch"))

    assert good["seeds"] == 3
    assert good["jumpstart"] == point(0.5)
    assert good["asymptotic_gain"] == point(0.0)
    assert good["transfer_ratio"] == point((0.875 - 0.5) / 0.5)
    assert good["time_to_threshold"] == {**point(0.0), "censored": 0}
    # Threshold met at step 0: half the first interval (5 steps); scratch needs 10 → 2×, a lower bound.
    assert good["sample_efficiency_gain"]["iqm"] == pytest.approx(2.0)
    assert good["sample_efficiency_gain"]["kinds"]["lower_bound"] == 3
    assert good["p_improvement"] == point(1.0)
    assert good["negative_transfer"] is False
    assert good["final"]["success"] == point(1.0)
    assert good["final"]["return"] == point(100.0)

    assert bad["jumpstart"] == point(0.0)
    assert bad["asymptotic_gain"] == point(-0.75)
    assert bad["transfer_ratio"] == point((0.0625 - 0.5) / 0.5)
    assert bad["time_to_threshold"] == {**point(20.0), "censored": 3}
    assert bad["sample_efficiency_gain"]["iqm"] == pytest.approx(10 / 20)
    assert bad["sample_efficiency_gain"]["kinds"]["upper_bound"] == 3
    assert bad["p_improvement"] == point(0.0)
    assert bad["negative_transfer"] is True

    assert zero["transfer_ratio"] == point(0.0)
    assert zero["asymptotic_gain"] == point(-0.5)
    assert zero["negative_transfer"] is False

    assert scratch["baseline"] is True
    assert scratch["time_to_threshold"]["iqm"] == pytest.approx(10.0)
    assert scratch["sample_efficiency_gain"] == {**point(1.0), "kinds": {"exact": 3, "lower_bound": 0,
                                                                        "upper_bound": 0, "undetermined": 0}}
    assert scratch["negative_transfer"] is False

    rows = [row for row in summary["per_seed"] if row["strategy"] == "bad"]
    assert [row["seed"] for row in rows] == [0, 1, 2]
    assert rows[0]["auc"] == pytest.approx(0.0625)
    assert rows[0]["censored"] is True
    assert rows[0]["gain_kind"] == "upper_bound"
    json.dumps(summary, allow_nan=False)


def test_negative_transfer_is_flagged_for_a_clearly_worse_strategy_with_noisy_seeds():
    curves = {"finetune": [0.4, 0.9, 1.0], "freeze": [0.0, 0.1, 0.2], "scratch": [0.0, 0.5, 1.0]}
    summary = summarize(records(curves, seeds=range(5), noise=0.05, rng=np.random.default_rng(1)),
                        THRESHOLD, BUDGET)
    freeze, finetune = summary["strategies"]["freeze"], summary["strategies"]["finetune"]
    assert freeze["negative_transfer"] is True
    assert freeze["transfer_ratio"]["ci"][1] < 0
    assert finetune["negative_transfer"] is False
    assert finetune["transfer_ratio"]["ci"][0] > 0
    assert summarize(records(curves, seeds=range(5), noise=0.05, rng=np.random.default_rng(1)),
                     THRESHOLD, BUDGET) == summary  # same seed, same CIs


def test_return_threshold_and_several_targets_stratify():
    data = records(target="icy") + records(target="windy")
    summary = summarize(data, Threshold("return", 50.0), BUDGET)
    assert summary["target"] == ["icy", "windy"]
    assert summary["metric"] == "return"
    good = summary["strategies"]["good"]
    assert good["seeds"] == 6
    assert good["jumpstart"] == point(50.0)
    assert good["transfer_ratio"] == point(0.75)


def test_pairing_skips_units_without_scratch_and_reruns_keep_the_last_record():
    others = {name: values for name, values in CURVES.items() if name != "bad"}
    data = records(others, seeds=(0, 1)) + records({"good": CURVES["good"]}, seeds=(7,))
    bad_seed_0 = records({"bad": CURVES["bad"]}, seeds=(0,))
    crashed_run = [{**record, "success": 0.0, "return": 0.0} for record in bad_seed_0]
    summary = summarize(data + crashed_run + bad_seed_0, THRESHOLD, BUDGET)
    assert summary["skipped"] == [{"strategy": "good", "target": "icy", "seed": 7}]
    assert summary["strategies"]["good"]["seeds"] == 2
    assert summary["strategies"]["bad"]["seeds"] == 1
    # the rerun, not the crashed run; one seed: no CI
    assert summary["strategies"]["bad"]["asymptotic_gain"] == {"iqm": pytest.approx(-0.75), "ci": None}


@pytest.mark.parametrize(("data", "threshold", "message"), [
    (records({"good": CURVES["good"]}), THRESHOLD, "no 'scratch' runs among the records .*good"),
    (records(), Threshold("reward", 1.0), "unknown threshold metric 'reward' .*success, return"),
    ([{"strategy": "scratch", "seed": 0, "target": "icy", "steps": 0, "success": 1.0}], THRESHOLD,
     "record 0 lacks return"),
    ([{"strategy": "scratch", "seed": 0, "target": "icy", "steps": 0, "success": float("nan"), "return": 0}],
     THRESHOLD, "record 0: 'success' must be a finite number, got nan"),
])
def test_bad_input_is_named(data, threshold, message):
    with pytest.raises(Sim2RealError, match=message):
        summarize(data, threshold, BUDGET)


def test_write_report_writes_all_files_and_warns_loudly(tmp_path):
    data = records()
    summary = summarize(data, THRESHOLD, BUDGET)
    settings = {"task": "driving", "policy": "driving-ppo-dr", "recommendation": "Use **good** on icy.",
                "versions": versions()}
    paths = write_report(tmp_path, summary, data, settings)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png", "gain.png", "report.json",
                                                                 "report.md"]
    assert set(paths) == {"report.json", "report.md", "curves.png", "gain.png"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["strategies"]["bad"]["negative_transfer"] is True
    assert set(report["strategies"]["good"]) >= {
        "jumpstart", "asymptotic_gain", "transfer_ratio", "time_to_threshold", "sample_efficiency_gain",
        "p_improvement", "negative_transfer"}
    assert report["settings"]["policy"] == "driving-ppo-dr"
    markdown = (tmp_path / "report.md").read_text()
    assert "WARNING: NEGATIVE TRANSFER" in markdown
    assert "> - **bad**: transfer ratio -0.875" in markdown
    assert "Use **good** on icy." in markdown
    for package in ("sim2real", "stable_baselines3", "torch", "gymnasium", "python"):
        assert f"| {package} |" in markdown
    assert "| sample-efficiency gain | 2× | [2, 2] | 3 of 3 seeds are lower bounds (≥) |" in markdown
    for name in ("curves.png", "gain.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_warning_section_without_negative_transfer(tmp_path):
    data = records({"good": CURVES["good"], "scratch": CURVES["scratch"]})
    write_report(tmp_path, summarize(data, THRESHOLD, BUDGET), data, {})
    markdown = (tmp_path / "report.md").read_text()
    assert "NEGATIVE TRANSFER" not in markdown
    assert "## Settings" not in markdown


def test_one_seed_a_stalled_unit_and_an_undetermined_gain_are_said_so_not_judged():
    one_seed = summarize(records(seeds=(0,)), THRESHOLD, BUDGET)
    bad = one_seed["strategies"]["bad"]
    assert bad["negative_transfer"] is None and bad["transfer_ratio"]["ci"] is None
    assert measured_verdict(one_seed).startswith("Measured: one seed per strategy")
    assert format_aggregate(bad, "transfer_ratio").endswith("(1 seed, no CI)")

    stalled = [{**record, "updates": 0 if record["strategy"] == "bad" else 5} for record in records()]
    summary = summarize(stalled, THRESHOLD, BUDGET)
    assert summary["strategies"]["bad"]["fewest_updates"] == 0
    assert summary["strategies"]["bad"]["negative_transfer"] is None  # 3 seeds, but it never learnt
    assert "made no gradient update" in measured_verdict(summary)

    never = {"scratch": [0.0, 0.0, 0.0], "flat": [0.1, 0.1, 0.1]}
    flat = summarize(records(never), THRESHOLD, BUDGET)["strategies"]["flat"]
    assert flat["sample_efficiency_gain"]["iqm"] is None
    assert format_aggregate(flat, "sample_efficiency_gain", "×") == "undetermined"
    assert flat["ratio_floored_seeds"] == 3 and format_aggregate(flat, "transfer_ratio").startswith("≥ ")


def test_a_curve_that_reaches_the_threshold_and_loses_it_is_called_a_collapse(tmp_path):
    # Threshold 0.5, margin 0.15: "fell" drops to 0.25 after reaching 0.5 (collapse); "dips" to 0.4 (holds).
    data = records({"fell": [0.0, 1.0, 0.25], "dips": [0.0, 0.5, 0.4], "scratch": CURVES["scratch"],
                    "bad": CURVES["bad"]})
    summary = summarize(data, THRESHOLD, BUDGET)
    strategies = summary["strategies"]
    assert strategies["fell"]["hold"] == {"reached_at": 10.0, "lowest": 0.25, "lowest_at": 20.0, "final": 0.25,
                                          "collapsed": True}
    assert strategies["dips"]["hold"]["collapsed"] is False
    assert strategies["scratch"]["hold"] == {"reached_at": 10.0, "lowest": 0.5, "lowest_at": 10.0, "final": 1.0,
                                             "collapsed": False}
    assert strategies["bad"]["hold"] is None  # never reached: nothing to lose
    write_report(tmp_path, summary, data, {})
    markdown = (tmp_path / "report.md").read_text()
    assert "WARNING: CURVES THAT COLLAPSE" in markdown
    assert "> - fell reached 50 % at 10 steps, then fell to 25 % at 20 (25 % at the end of the budget)" in markdown
    assert "dips reached" not in markdown


def test_the_collapse_verdict_reads_the_iqm_curve_over_seeds():
    # One seed of three collapses: the IQM (middle half) does not; all three do: it does.
    one = records({"s": [0.0, 1.0, 1.0], "scratch": CURVES["scratch"]}, seeds=(0, 1)) + records(
        {"s": [0.0, 1.0, 0.0], "scratch": CURVES["scratch"]}, seeds=(2,))
    assert summarize(one, THRESHOLD, BUDGET)["strategies"]["s"]["hold"]["collapsed"] is False
    every = records({"s": [0.0, 1.0, 0.0], "scratch": CURVES["scratch"]})
    assert summarize(every, THRESHOLD, BUDGET)["strategies"]["s"]["hold"]["collapsed"] is True
