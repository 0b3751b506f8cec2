"""The demo: every lever on every far target into one page, which says which lever won; a rerun resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim2real.demo.cases import FarTarget, OnTheTestbed, Retraining, Transductive, settings
from sim2real.demo.levers import LeverResult, retraining_lever
from sim2real.demo.page import PAGE, target_sentence
from sim2real.demo.run import best_strategy, run_demo
from sim2real.demo.summary import read_summary
from sim2real.experiment.run_directory import RESULTS_FILE
from sim2real.rundir import RunFolderError, RunRecord, claim_folder
from sim2real.sysid import SysIdError
from sim2real.zoo import policies_dir, policy_sha256


def lever(name: str, success: float, steps: int | None) -> LeverResult:
    return LeverResult("truck", name, f"{name} method", success, steps is not None, steps, "detail", "2 of 3 seeds")


def test_the_lever_with_the_fewest_target_steps_wins():
    results = [lever("nominal", 0.02, None), lever("randomized", 0.9, 0), lever("retraining", 0.95, 6000)]
    sentence = target_sentence("truck", results, 0.8)
    assert sentence.startswith("**truck**: randomized pretraining won — randomized method reached 90 % with no "
                               "target step; nominal method scores 2 % zero-shot")
    assert sentence.endswith("the threshold was also reached by partial retraining (retraining method, after 6.0k "
                             "target steps (IQM over seeds, a seed that never got there counted at the budget; 2 of 3 "
                             "seeds got there)).")


def strategy_data(times: list[float], censored: int, final: float) -> dict:
    iqm = sum(times) / len(times)
    reached = {"iqm": iqm, "ci": [min(times), max(times)], "censored": censored}
    return {"seeds": len(times), "time_to_threshold": reached,
            "final": {"success": {"iqm": final, "ci": [final, final]}},
            "sample_efficiency_gain": {"iqm": None, "ci": None, "kinds": {}}}


def test_the_best_strategy_is_one_most_seeds_took_to_the_threshold():
    case = FarTarget("driving", "truck", "n", "r",
                     Retraining("p", ("zero_shot", "reinit_head", "finetune:lr_scale=0.5", "scratch"), 8000, 2000))
    report = {"metric": "success", "threshold": {"metric": "success", "value": 0.8}, "budget": 8000, "strategies": {
        "zero_shot": strategy_data([8000, 8000, 8000], censored=3, final=0.0),
        "reinit_head": strategy_data([1000, 8000, 8000], censored=2, final=0.3),  # IQM 5.7k, 1 seed of 3
        "finetune": strategy_data([6000, 6000, 8000], censored=1, final=0.9),  # IQM 6.7k, 2 seeds of 3
        "scratch": strategy_data([8000, 8000, 8000], censored=3, final=0.0)}}
    assert best_strategy(case, report) == "finetune:lr_scale=0.5"
    result = retraining_lever("truck", "p", "finetune:lr_scale=0.5", report)
    assert result.reached and result.target_steps == 6667 and result.seeds == "2 of 3 seeds"
    assert result.method == "finetune:lr_scale=0.5 from p"
    assert "scratch: 80 % not reached by 8.0k" in result.detail
    assert not retraining_lever("truck", "p", "reinit_head", report).reached
    report["strategies"]["finetune"]["hold"] = {"reached_at": 6000.0, "lowest": 0.3, "lowest_at": 8000.0,
                                                "final": 0.3, "collapsed": True}
    assert ("80 % after 6.7k [6.0k, 8.0k] (2 of 3 seeds), 90 % at 8.0k (its IQM curve fell to 30 % at 8.0k after "
            "reaching it); scratch") in retraining_lever("truck", "p", "finetune", report).detail


def test_a_single_testbed_run_does_not_win_over_the_measured_levers():
    results = [lever("nominal", 0.0, None), lever("retraining", 0.87, 2700), lever("testbed", 1.0, 2000)]
    sentence = target_sentence("warehouse", results, 0.8)
    assert sentence.startswith("**warehouse**: partial retraining won — retraining method reached the threshold after "
                               "2.7k target steps")
    assert "adaptation on the testbed (testbed method, after 2,000 robot steps (2 of 3 seeds))" in sentence


def test_the_page_says_when_no_lever_reached_the_threshold():
    results = [lever("nominal", 0.0, None), lever("retraining", 0.6, None)]
    assert target_sentence("warehouse", results, 0.8) == (
        "**warehouse**: no lever reached 80 % within these budgets; the best was partial retraining "
        "(retraining method) at 60 %; nominal method scores 0 % zero-shot.")


def test_a_bad_setting_fails_before_any_work(tmp_path: Path):
    case = FarTarget("grasping", "warehouse", "grasping-ppo-nominal", "grasping-ppo-dr",
                     Retraining("grasping-sac-nominal", ("finetune:utd=2", "scratch"), budget=1200, eval_every=600),
                     Transductive("grasping-ppo-nominal", "sysid_finetune:sysid_budget=10"))
    with pytest.raises(SysIdError, match="budget .discrepancy evaluations. 10 is below one CMA-ES generation"):
        run_demo(tmp_path / "demo", far_targets=(case,), say=lambda _: None)
    assert not (tmp_path / "demo").exists()


def test_a_folder_the_demo_did_not_write_is_refused(tmp_path: Path):
    mine = tmp_path / "runs" / "driving-truck"
    mine.mkdir(parents=True)
    (mine / "results.jsonl").write_text("my own run\n")
    with pytest.raises(RunFolderError, match="holds driving-truck of an unrecorded run; add --force"):
        run_demo(tmp_path / "runs", testbed=None, say=lambda _: None)
    assert (mine / "results.jsonl").read_text() == "my own run\n"


def test_a_retrained_policy_is_a_different_demo_and_its_folder_is_refused(tmp_path: Path):
    policy = tmp_path / "mine"
    shutil.copytree(policies_dir() / "driving-ppo-dr", policy)
    case = FarTarget("driving", "truck", "driving-ppo-nominal", str(policy),
                     Retraining("driving-ppo-nominal", ("finetune", "scratch"), budget=2048, eval_every=1024))
    before = settings((case,), None)
    assert before["policies"] == {"driving-ppo-nominal": policy_sha256("driving-ppo-nominal"),
                                  str(policy): policy_sha256(policy)}
    claim_folder(tmp_path / "demo", RunRecord("demo", before), ())
    (tmp_path / "demo" / "driving-truck").mkdir()  # the first run's work
    with (policy / "model.zip").open("ab") as model:
        model.write(b"retrained")
    after = settings((case,), None)
    assert after["policies"][str(policy)] != before["policies"][str(policy)]
    with pytest.raises(RunFolderError) as refused:
        run_demo(tmp_path / "demo", far_targets=(case,), testbed=None, say=lambda _: None)
    changed = f"policies.{policy} is {before['policies'][str(policy)]!r} there, {after['policies'][str(policy)]!r} here"
    assert changed in str(refused.value) and "add --force" in str(refused.value)
    assert "driving-ppo-nominal" not in str(refused.value), "only the policy that changed is named"
    assert (tmp_path / "demo" / "driving-truck").is_dir()


def test_a_small_demo_writes_its_page_and_a_rerun_resumes(tmp_path: Path):
    far_targets = (
        FarTarget("driving", "truck", "driving-ppo-nominal", "driving-ppo-dr",
                  Retraining("driving-ppo-nominal",
                             ("zero_shot", "residual:critic_warmup=100:learning_starts=1900", "scratch"),
                             budget=2048, eval_every=1024, episodes=2, seeds=1),
                  why_no_transductive="measured not to pay"),
        FarTarget("grasping", "warehouse", "grasping-ppo-nominal", "grasping-ppo-dr",
                  Retraining("grasping-sac-nominal", ("zero_shot", "finetune:utd=2:learning_starts=900", "scratch"),
                             budget=1200, eval_every=600, episodes=2, seeds=1),
                  Transductive("grasping-ppo-nominal", "sysid_finetune:rounds=1:episodes=1:sysid_budget=76:"
                                                       "sim_steps=512", eval_episodes=2)),
    )
    testbed = OnTheTestbed("grasping", "warehouse", "grasping-sac-nominal", "finetune:utd=2:learning_starts=50",
                           budget=200,
                           eval_every=100, episodes=2)
    out = tmp_path / "demo"
    said: list[str] = []
    summary = run_demo(out, far_targets=far_targets, testbed=testbed, zero_shot_episodes=4, gifs=False,
                       say=said.append)

    by_lever = {(r.target, r.lever): r for r in summary.levers}
    assert set(by_lever) == {("truck", "nominal"), ("truck", "randomized"), ("truck", "retraining"),
                             ("warehouse", "nominal"), ("warehouse", "randomized"), ("warehouse", "retraining"),
                             ("warehouse", "transductive"), ("warehouse", "testbed")}
    # the shipped policies as the cards measure them: the nominal car fails the truck, the randomized one drives it
    assert by_lever["truck", "nominal"].success < 0.5 <= by_lever["truck", "randomized"].success
    assert by_lever["truck", "randomized"].reached and by_lever["truck", "randomized"].target_steps == 0
    assert by_lever["warehouse", "testbed"].detail.startswith(f"{testbed.strategy} from grasping-sac-nominal: ")
    assert by_lever["warehouse", "transductive"].detail.endswith("recorded target steps (no reward used)")
    page = (out / PAGE).read_text()
    assert "| truck (driving) |" in page and "| warehouse (grasping) |" in page
    assert "not run: measured not to pay" in page
    assert "randomized pretraining won" in page
    assert (out / summary.runs["truck"] / "curves.png").is_file()
    assert (out / summary.runs["testbed"] / "report.md").is_file()
    assert read_summary(out / "demo.json") == summary and not summary.resumed
    assert list(summary.stages) == ["zero-shot", "fitted simulator on warehouse", "waiting for the testbed run",
                                    "partial retraining on truck", "partial retraining on warehouse", "GIFs"]
    assert all(seconds >= 0 for seconds in summary.stages.values())
    assert summary.stages["partial retraining on truck"] > 1  # a trained unit, not a lookup
    assert sum(summary.stages.values()) <= summary.wall_seconds
    assert f"Finished in {summary.timing()}" in page and "zero-shot" in summary.timing()

    trained = {name: (out / run / RESULTS_FILE).read_text() for name, run in summary.runs.items()
               if (out / run / RESULTS_FILE).exists()}
    again = run_demo(out, far_targets=far_targets, testbed=testbed, zero_shot_episodes=4, gifs=False,
                     say=said.append)
    assert again.levers == summary.levers and again.resumed
    assert {name: (out / run / RESULTS_FILE).read_text() for name, run in again.runs.items()
            if (out / run / RESULTS_FILE).exists()} == trained
