"""Transductive transfer: record on the target without reward, fit the simulator, fine-tune there, count the cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_PPO_TRAIN, tiny_pendulum_bundle, write_task
from typer.testing import CliRunner

from sim2real import experiment, make_env
from sim2real.cli import app
from sim2real.defaults import EVAL_SEED
from sim2real.errors import Sim2RealError
from sim2real.experiment import RESULTS_FILE
from sim2real.experiment.plan import check_policy
from sim2real.records import read_jsonl
from sim2real.sysid import SysIdError
from sim2real.transductive import RECORD_SEED, run_loop, transduce
from sim2real.transfer import SysidFinetune, TransferError, get_strategy
from sim2real.zoo import load_policy

TASK = """
name: swing
description: a short Pendulum whose bob and rod the target hides
id: Pendulum-v1
kwargs: {max_episode_steps: 50}
params:
  mass: {nominal: 1.0, low: 0.2, high: 5.0, bind: {attr: m}}
  length: {nominal: 1.0, low: 0.3, high: 3.0, bind: {attr: l}}
targets:
  heavy: {kind: far, description: a heavier bob on a longer rod, params: {mass: 2.5, length: 1.4}}
""" + TINY_PPO_TRAIN + """threshold: {return: -200}
transfer: {budget: 200, eval_every: 50, episodes: 2, seeds: 1}
"""
CARD = {"task": "swing", "algo": "ppo", "randomized": False, "train_steps": 128, "seed": 0, "source_success": 0.0,
        "targets": {}}
SMALL = {"episodes": 2, "sysid_budget": 800, "horizon": 30, "sim_steps": 128, "rounds": 1}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory, "swing", TASK)


@pytest.fixture(scope="module")
def policy(task, tmp_path_factory) -> Path:
    # an untrained policy barely pushes; identification needs actions that move the bob
    return tiny_pendulum_bundle(task, tmp_path_factory.mktemp("zoo") / "swing-ppo", CARD, action_gain=300.0)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.policy.state_dict().items()}


def test_the_loop_recovers_the_hidden_physics_and_trains_a_copy(task, policy):
    target = make_env(task, "heavy")
    pretrained = load_policy(policy, target)
    before = weights(pretrained)
    result = transduce(pretrained, task, target, SysidFinetune(**SMALL), seed=3)

    assert result.target_steps == 2 * 50
    assert [t.seed for t in result.trajectories] == [RECORD_SEED + 30_000, RECORD_SEED + 30_001]
    assert result.fit.action_delay_steps == 0
    assert result.fit.values["mass"] == pytest.approx(2.5, rel=0.15)
    assert result.fit.values["length"] == pytest.approx(1.4, rel=0.15)
    assert result.fitted.domain("fitted")["mass"] == pytest.approx(result.fit.values["mass"])
    assert result.model is not pretrained and result.model.num_timesteps >= SMALL["sim_steps"]
    assert all(torch.equal(before[k], v) for k, v in weights(pretrained).items()), "the pretrained model changed"


def test_a_transductive_unit_costs_only_its_recorded_steps(task, policy, tmp_path):
    strategy = get_strategy("sysid_finetune", **SMALL)
    plan = experiment.make_plan(task, policy, "heavy", ["scratch", strategy])
    run_dir = experiment.run(plan, tmp_path / "run", workers=1)
    records = [r for r in read_jsonl(run_dir / RESULTS_FILE) if r["strategy"] == "sysid_finetune"]
    assert [r["steps"] for r in records] == [0, 50, 100, 150, 200]
    assert {r["target_steps_used"] for r in records} == {100}
    zero_shot = load_policy(policy, make_env(task, "heavy"))
    from sim2real.rollout import evaluate

    pretrained = evaluate(zero_shot, make_env(task, "heavy"), plan.episodes, seed=EVAL_SEED)["mean_return"]
    assert [r["return"] for r in records[:2]] == pytest.approx([pretrained] * 2)
    assert len({r["return"] for r in records[2:]}) == 1
    report = json.loads((run_dir / "report.json").read_text())
    assert "sysid_finetune" in json.dumps(report)


@pytest.mark.parametrize(("options", "message"), [
    ({"episodes": 0}, "episodes must be an integer >= 1"),
    ({"sysid_budget": 5}, "sysid_budget must be an integer >= 10"),
    ({"sim_steps": 1.5}, "sim_steps must be an integer >= 1"),
    ({"params": []}, "params must be a non-empty list"),
    ({"rounds": 0}, "rounds must be an integer >= 1"),
    ({"episodes": 5001}, "episodes × rounds must be at most 10000"),
    ({"lr_scale": 0}, "lr_scale must be a finite number > 0"),
])
def test_bad_options_are_refused_naming_the_value(options, message):
    with pytest.raises(TransferError, match=message):
        get_strategy("sysid_finetune", **options)


def test_a_parameter_the_task_cannot_fit_is_refused_before_any_recording(task, policy):
    plan = experiment.make_plan(task, policy, "heavy", ["scratch", get_strategy("sysid_finetune", params=["grip"])])
    with pytest.raises(SysIdError, match=r"cannot fit grip: not a numeric .* of swing \(fittable: mass, length\)"):
        check_policy(plan)


def test_a_bad_worker_count_is_refused_before_the_loop_writes_anything(task, policy, tmp_path):
    with pytest.raises(Sim2RealError, match=r"workers \(processes replaying candidates\) must be an integer >= 1, "
                                            r"got 0"):
        run_loop(policy, task, tmp_path / "adapt", strategy=get_strategy("sysid_finetune"), target="heavy", workers=0)
    assert not (tmp_path / "adapt").exists()


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim2real.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_the_adapt_command_writes_everything_and_resumes(task, policy, tmp_path):
    out = tmp_path / "adapt"
    args = ("adapt", policy, "--task", task, "--target", "heavy", "--episodes", "2", "--budget", "52",
            "--horizon", "20", "--sim-steps", "64", "--eval-episodes", "2", "--out", out)
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert {p.name for p in out.iterdir()} == {"round-1", "round-2", "eval-pretrained", "eval-adapted",
                                               "summary.json", "run.json"}
    for folder in ("round-1", "round-2"):
        assert {p.name for p in (out / folder).iterdir()} == {"rollouts.jsonl", "sysid", "adapted.zip"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target_steps_used"] == 2 * 2 * 50 and set(summary["success"]) == {"pretrained", "adapted"}
    assert set(summary["fit"]) == {"mass", "length"}
    assert summary["adapted_policy"] == str(out / "round-2" / "adapted.zip")
    assert all(len(summary["success_ci"][name]) == 2 for name in ("pretrained", "adapted"))  # was always null
    assert summary["recommended"] == ("adapted" if summary["gain_points"] >= 0 else "pretrained")
    round_two = json.loads((out / "round-2" / "sysid" / "fit.json").read_text())
    assert round_two["episodes"] == 4  # the second fit uses both rounds' recordings
    model_bytes = (out / "round-2" / "adapted.zip").read_bytes()

    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists: kept") == 2
    assert len((out / "round-1" / "rollouts.jsonl").read_text().splitlines()) == 2
    assert (out / "round-2" / "adapted.zip").read_bytes() == model_bytes

    files = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    for option, value in (("--seed", "1"), ("--target", "source"), ("--episodes", "3"), ("--sim-steps", "128"),
                          ("--budget", "60"), ("--horizon", "10"), ("--eval-episodes", "3"), ("--rounds", "1"),
                          ("--no-randomize", None), ("--params", "mass")):
        changed = CliRunner().invoke(app, [*map(str, args), option, *([value] if value else [])])  # refused first
        assert changed.exit_code == 2 and "holds another run" in changed.stderr, (option, changed.stderr)
        assert len(changed.stderr.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == files


@pytest.mark.parametrize(("extra", "message"), [
    (("--params", "grip"), "cannot fit grip"),
    (("--episodes", "0"), "episodes must be an integer >= 1, got 0"),
    (("--target", "moon"), "unknown target 'moon'"),
])
def test_the_adapt_command_refuses_bad_input_in_one_line(task, policy, tmp_path, extra, message):
    result = cli("adapt", policy, "--task", task, "--target", "heavy", "--out", tmp_path / "x", *extra)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x" / "round-1").exists()


@pytest.mark.slow
def test_the_factory_policy_relearns_the_turned_warehouse_arm_in_the_fitted_simulator():
    target = make_env("grasping", "warehouse")
    pretrained = load_policy("grasping-ppo-nominal", target)
    result = transduce(pretrained, "grasping", target, SysidFinetune(), seed=0)
    assert result.fit.values["mount_yaw"] == pytest.approx(1.5708, abs=0.15)
    from sim2real.rollout import evaluate

    assert evaluate(result.model, target, 20, seed=EVAL_SEED)["success_rate"] >= 0.8
