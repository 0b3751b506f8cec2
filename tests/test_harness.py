"""The transfer harness: plans and units, validation before training, step accounting, resume after a crash."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import TINY_PPO_TRAIN, tiny_pendulum_bundle, write_task
from stable_baselines3 import PPO

from sim2real import catalog, experiment
from sim2real.errors import ConfigError, Sim2RealError
from sim2real.experiment import GAP_FILE, PLAN_FILE, RESULTS_FILE, HarnessError, Progress
from sim2real.experiment import harness as harness_module
from sim2real.experiment import unit as unit_module
from sim2real.experiment.backends import LocalBackend, WorkerError
from sim2real.factory import make_env
from sim2real.records import read_jsonl
from sim2real.transfer import FineTune, TransferError
from sim2real.zoo import BundleError, load_policy, save_bundle

TASK = """
name: tiny
description: a short Pendulum for harness tests
id: Pendulum-v1
kwargs: {max_episode_steps: 50}
params:
  mass: {nominal: 1.0, low: 0.2, high: 5.0, bind: {attr: m}}
targets:
  heavy: {kind: far, description: a heavier bob, params: {mass: 2.5}}
""" + TINY_PPO_TRAIN + """threshold: {return: -200}
transfer: {budget: 512, eval_every: 256, episodes: 2, seeds: 2, strategies: [zero_shot, finetune, scratch]}
"""
CARD = {"task": "tiny", "algo": "ppo", "randomized": False, "train_steps": 128, "seed": 0, "source_success": 0.0,
        "targets": {}}
METRICS = ("jumpstart", "asymptotic_gain", "transfer_ratio", "time_to_threshold", "sample_efficiency_gain",
           "p_improvement")
KILLED_RUN = """
import sys
from sim2real import experiment
from sim2real.experiment import unit as unit_module
task, policy, out = sys.argv[1:4]
experiment.run(experiment.make_plan(task, policy, "heavy"), out, workers=2)
"""


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory, "tiny", TASK)


@pytest.fixture(scope="module")
def policy(task, tmp_path_factory) -> Path:
    return tiny_pendulum_bundle(task, tmp_path_factory.mktemp("zoo") / "tiny-ppo", CARD)


@pytest.fixture(scope="module")
def plan(task, policy) -> experiment.Plan:
    return experiment.make_plan(task, policy, "heavy")


@pytest.fixture(scope="module")
def complete_run(plan, tmp_path_factory) -> Path:
    """An uninterrupted run in this process (one worker): the reference for resumed runs."""
    return experiment.run(plan, tmp_path_factory.mktemp("runs") / "complete", workers=1)


def without_wall_time(records: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "wall_seconds"} for r in records),
                  key=lambda r: (r["unit"], r["steps"]))


def report_numbers(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    report.pop("settings")
    return report


def test_units_cross_targets_strategies_and_seeds(plan):
    keys = [unit.key for unit in plan.units()]
    assert keys == ["heavy/zero_shot/0", "heavy/finetune/0", "heavy/scratch/0",
                    "heavy/zero_shot/1", "heavy/finetune/1", "heavy/scratch/1"]
    assert plan.steps == (0, 256, 512)
    assert plan.to_record("hash").strategies[1] == FineTune().to_dict()


def test_the_grid_ends_at_the_budget_and_keeps_the_tasks_number_of_evaluations(task, policy):
    assert experiment.make_plan(task, policy, "heavy", budget=600, eval_every=250).steps == (0, 250, 500, 600)
    assert experiment.make_plan(task, policy, "heavy", budget=1024).steps == (0, 512, 1024)


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"budget": 100, "eval_every": 200}, HarnessError, r"budget \(100 steps\) is smaller than eval_every \(200\)"),
    ({"strategies": ["zero_shot", "warp", "scratch"]}, TransferError,
     r"unknown transfer strategy 'warp'; known strategies: zero_shot, scratch, finetune"),
    ({"targets": ["moon"]}, ConfigError, r"unknown target 'moon' \(allowed: source, heavy\)"),
    ({"seeds": 0}, HarnessError, r"seeds \(training seeds .*\) must be an integer >= 1, got 0"),
    ({"episodes": 0}, HarnessError, r"episodes \(episodes per evaluation\) must be an integer >= 1, got 0"),
    ({"strategies": ["zero_shot", "finetune"]}, HarnessError, r"lack 'scratch'"),
    ({"strategies": ["scratch", "scratch"]}, HarnessError, r"strategy scratch appears more than once"),
])
def test_a_bad_plan_is_refused_with_the_value_and_what_is_accepted(task, policy, changes, error, message):
    arguments = {"targets": "heavy", **changes}
    with pytest.raises(error, match=message):
        experiment.make_plan(task, policy, **arguments)


def test_a_policy_for_other_spaces_is_refused_before_training(task, tmp_path):
    other = PPO("MlpPolicy", gym.make("MountainCarContinuous-v0"), n_steps=64, batch_size=64, seed=0)
    bundle = save_bundle(other, tmp_path / "car", {**CARD, "task": "car"})
    plan = experiment.make_plan(task, bundle, "heavy")
    with pytest.raises(BundleError, match=r"observation space Box.*\(2,\).*but the env has Box.*\(3,\)"):
        experiment.run(plan, tmp_path / "run", workers=1)
    assert not (tmp_path / "run").exists()


def test_a_strategy_the_policy_cannot_take_is_refused_before_training(task, policy, tmp_path):
    plan = experiment.make_plan(task, policy, "heavy", ["freeze_base", "scratch"])
    with pytest.raises(TransferError, match=r"freeze_base: no base to freeze, every network has a single hidden"):
        experiment.run(plan, tmp_path / "run", workers=1)
    assert not (tmp_path / "run").exists()


def test_a_missing_ray_says_how_to_install_it(plan, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(Sim2RealError, match=r'pip install "sim2real\[ray\]"'):
        experiment.run(plan, tmp_path / "run", backend="ray")
    with pytest.raises(Sim2RealError, match=r"unknown backend 'slurm' \(allowed: local, ray\)"):
        experiment.run(plan, tmp_path / "run", backend="slurm")
    assert not (tmp_path / "run").exists()


def test_a_run_writes_every_evaluation_of_every_unit_and_the_report(complete_run, plan):
    records = read_jsonl(complete_run / RESULTS_FILE)
    assert len(records) == len(plan.units()) * len(plan.steps)
    for unit in plan.units():
        mine = [r for r in records if r["unit"] == unit.key]
        assert [r["steps"] for r in mine] == [0, 256, 512]
        assert {(r["strategy"], r["target"], r["seed"], r["episodes"]) for r in mine} == {
            (unit.strategy.name, "heavy", unit.seed, 2)}
        assert all(r["options"] == unit.strategy.to_dict() for r in mine)
    zero_shot = [r for r in records if r["strategy"] == "zero_shot"]
    assert len({r["return"] for r in zero_shot}) == 1
    report = json.loads((complete_run / "report.json").read_text())
    for entry in report["strategies"].values():
        assert all(set(entry[name]) >= {"iqm", "ci"} for name in METRICS)
        assert isinstance(entry["negative_transfer"], bool)
    settings = report["settings"]
    assert settings["plan"] == json.loads((complete_run / PLAN_FILE).read_text())
    assert settings["recommendation"].startswith(settings["zero_shot_gap"]["heavy"]["advice"])
    assert settings["recommendation"].endswith(settings["verdict"]) and settings["verdict"].startswith("Measured: ")
    assert settings["versions"]["sim2real"]
    assert {"report.md", "curves.png", "gain.png", GAP_FILE} <= {p.name for p in complete_run.iterdir()}


def test_evaluations_use_the_newest_weights_trained_on_at_most_that_many_steps(task, policy, monkeypatch):
    # PPO updates every 64 steps; the grid (0, 100, 200, 256) falls between updates.
    plan = experiment.make_plan(task, policy, "heavy", budget=256, eval_every=100, seeds=1)
    seen = []
    evaluate = unit_module.evaluate

    def spy(model, *args, **kwargs):
        seen.append(model._n_updates // model.n_epochs * model.n_steps)
        return evaluate(model, *args, **kwargs)

    monkeypatch.setattr(unit_module, "evaluate", spy)
    unit = next(u for u in plan.units() if u.strategy.name == "finetune")
    records = unit_module.run_unit(unit, plan).records
    assert [r.steps for r in records] == [0, 100, 200, 256]
    assert seen == [0, 64, 192, 256]


def test_same_seeds_give_the_same_records(plan):
    unit = plan.units()[1]
    assert without_wall_time([r.to_json() for r in unit_module.run_unit(unit, plan).records]) == without_wall_time(
        [r.to_json() for r in unit_module.run_unit(unit, plan).records])


def test_a_rerun_runs_only_the_missing_units_and_keeps_each_evaluation_once(complete_run, plan, tmp_path,
                                                                            monkeypatch):
    run_dir = shutil.copytree(complete_run, tmp_path / "run")
    results = run_dir / RESULTS_FILE
    lines = results.read_text().splitlines(keepends=True)
    dropped, cut = "heavy/finetune/1", "heavy/scratch/0"
    kept = [line for line in lines if json.loads(line)["unit"] != dropped]
    first_cut = next(i for i, line in enumerate(kept) if json.loads(line)["unit"] == cut)
    kept = [line for i, line in enumerate(kept) if json.loads(line)["unit"] != cut or i == first_cut]
    results.write_text("".join(kept) + kept[0][:25])  # a unit cut short and a torn last line
    experiment.write_run_report(run_dir)  # a report of what is complete, as `sim2real report` gives mid-run
    partial = json.loads((run_dir / "report.json").read_text())
    assert partial["settings"]["complete_units"] == "4 of 6"
    assert [(u["strategy"], u["seed"]) for u in partial["skipped"]] == [("zero_shot", 0), ("finetune", 0)]
    executed, progress = [], []
    run_unit = unit_module.run_unit

    def counting(unit, plan, models_dir=None):
        executed.append(unit.key)
        return run_unit(unit, plan, models_dir)

    monkeypatch.setattr(unit_module, "run_unit", counting)
    experiment.run(plan, run_dir, workers=1, progress=progress.append)
    assert sorted(executed) == sorted([dropped, cut])
    records = read_jsonl(results)
    assert len({(r["unit"], r["steps"]) for r in records}) == len(records) == 18
    assert without_wall_time(records) == without_wall_time(read_jsonl(complete_run / RESULTS_FILE))
    assert report_numbers(run_dir) == report_numbers(complete_run)
    assert [p.done for p in progress if p.unit] == [5, 6]
    assert progress[0] == Progress(4, 6, None, progress[0].elapsed, None, "4 of 6 units already complete")
    assert progress[-1].eta == 0


def test_a_step_recorded_twice_counts_by_its_last_record_in_the_report_and_on_resume(complete_run, plan, tmp_path):
    records = read_jsonl(complete_run / RESULTS_FILE)
    again = {**records[0], "success": 1.0 - records[0]["success"], "return": records[0]["return"] + 1.0}
    twice = shutil.copytree(complete_run, tmp_path / "twice")
    with (twice / RESULTS_FILE).open("a") as handle:
        handle.write(json.dumps(again) + "\n")
    replaced = shutil.copytree(complete_run, tmp_path / "replaced")
    (replaced / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in [again, *records[1:]]))
    experiment.write_run_report(twice)
    experiment.write_run_report(replaced)
    assert report_numbers(twice) == report_numbers(replaced)  # the curves' rule: a step's last record wins
    experiment.run(plan, twice, workers=1)
    assert without_wall_time(read_jsonl(twice / RESULTS_FILE)) == without_wall_time([again, *records[1:]])


def test_a_run_of_another_plan_is_refused_naming_what_differs(complete_run, task, policy):
    other = experiment.make_plan(task, policy, "heavy", budget=1024, eval_every=256)
    with pytest.raises(HarnessError, match=r"budget: 512 there, 1024 here; .*steps: \[0, 256, 512\] there"):
        experiment.run(other, complete_run, workers=1)


def _live_processes(group: int) -> list[int]:
    """Pids in a process group that are not zombies (Linux /proc)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find left-over workers")
def test_a_run_killed_at_a_random_moment_resumes_to_the_same_results(complete_run, plan, task, policy, tmp_path):
    rng = np.random.default_rng(20240611)
    run_dir = tmp_path / "killed"
    results = run_dir / RESULTS_FILE
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(task), str(policy), str(run_dir)],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        started = lambda: results.exists() and results.stat().st_size > 0  # noqa: E731
        while child.poll() is None and not started() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        while _live_processes(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _live_processes(child.pid), "pool workers outlived their killed parent"
    finally:
        if _live_processes(child.pid):
            os.killpg(child.pid, signal.SIGKILL)
        log.close()
    assert (run_dir / PLAN_FILE).exists(), (tmp_path / "child.log").read_text()
    experiment.run(plan, run_dir, workers=1)
    records = read_jsonl(results)
    assert len({(r["unit"], r["steps"]) for r in records}) == len(records) == 18
    assert without_wall_time(records) == without_wall_time(read_jsonl(complete_run / RESULTS_FILE))
    assert report_numbers(run_dir) == report_numbers(complete_run)


def gap(metric="success", threshold=0.8, source=0.9, zero_shot=0.5, random=0.0):
    level = {"success": 0.0, "return": 0.0}
    return {"target": "icy", "metric": metric, "threshold": threshold, "source": {**level, metric: source},
            "zero_shot": {**level, metric: zero_shot}, "random": {**level, metric: random}}


@pytest.mark.parametrize(("case", "verdict", "words"), [
    (gap(zero_shot=0.85), "zero_shot", "Zero-shot is enough on icy"),
    (gap(zero_shot=0.5), "transfer", "keeps 56 % of its edge"),
    (gap(zero_shot=0.5), "transfer", "Try finetune first"),
    (gap(source=0.6, zero_shot=0.3), "transfer", "misses the threshold on the source as well"),
    (gap(zero_shot=0.05), "transfer", "undoes a policy that still solves the source"),
    (gap(zero_shot=0.05), "transfer", "Try residual first"),
    (gap(source=0.6, zero_shot=0.02), "retrain", "barely better than random actions there"),
    (gap(source=0.05, zero_shot=0.0), "retrain", "even on the source"),
    (gap("return", -200, source=-150, zero_shot=-700, random=-1200), "transfer", "keeps 48 %"),
    (gap("return", -200, source=-150, zero_shot=-1150, random=-1200), "transfer", "Try residual first"),
    (gap("return", -200, source=-250, zero_shot=-1150, random=-1200), "retrain", "barely better"),
    (gap("return", -200, source=-150, zero_shot=-180, random=-1200), "zero_shot", "-180.0 zero-shot"),
    ({**gap(zero_shot=0.05), "kind": "task"}, "transfer", "icy is a new task"),
    ({**gap(zero_shot=0.05), "kind": "task"}, "transfer", "Try finetune first"),
    ({**gap(zero_shot=0.9), "kind": "task"}, "zero_shot", "Zero-shot is enough on icy"),
    ({**gap(), "zero_shot": None, "spaces": "observation (3,) → (5,)"}, "transfer",
     "changes the task and its spaces (observation (3,) → (5,))"),
    ({**gap(), "zero_shot": None, "spaces": "observation (3,) → (5,)"}, "transfer",
     "Try finetune first"),
])
def test_the_recommendation_follows_the_zero_shot_gap(case, verdict, words):
    got, text = experiment.recommend(case)
    assert got == verdict
    assert words in text


LINE_TASK = """
name: line
description: reach a goal on a line; the target task appends two observation entries
id: "conftest:LineReachEnv"
params:
  speed: {nominal: 0.2, low: 0.05, high: 0.5, bind: {attr: speed}}
targets:
  sensors: {kind: task, description: two more observation entries, task: {extra: 2}}
""" + TINY_PPO_TRAIN + """threshold: {success: 0.8}
transfer: {budget: 128, eval_every: 128, episodes: 8, seeds: 1}
"""


def test_a_target_that_appends_observation_entries_starts_finetune_from_the_pretrained_behaviour(
        tmp_path_factory, tmp_path):
    task = write_task(tmp_path_factory, "line", LINE_TASK)
    model = PPO("MlpPolicy", make_env(catalog.load(task), "source"), n_steps=64, batch_size=64, seed=0,
                policy_kwargs={"net_arch": [16]}).learn(640)
    bundle = save_bundle(model, tmp_path / "line-ppo", {**CARD, "task": "line"})
    measured = experiment.zero_shot_gap(task, bundle, "sensors", episodes=8)
    assert measured["kind"] == "task" and measured["spaces"] == "observation (2,) → (4,)"
    assert measured["zero_shot"] is None and experiment.recommend(measured)[0] == "transfer"
    with pytest.raises(TransferError, match=r"zero_shot runs the pretrained policy as it is, but the target's spaces"):
        experiment.run(experiment.make_plan(task, bundle, "sensors", ["zero_shot", "scratch"]), tmp_path / "no",
                       workers=1)
    assert not (tmp_path / "no").exists()
    run = experiment.run(experiment.make_plan(task, bundle, "sensors", ["finetune", "scratch"]), tmp_path / "run",
                         workers=1)
    first = next(r for r in read_jsonl(run / RESULTS_FILE) if r["strategy"] == "finetune" and r["steps"] == 0)
    assert (first["success"], first["return"]) == pytest.approx(
        (measured["source"]["success"], measured["source"]["return"]))


def test_the_zero_shot_gap_is_recorded_with_its_verdict(complete_run):
    gaps = json.loads((complete_run / GAP_FILE).read_text())
    heavy = gaps["heavy"]
    assert heavy["metric"] == "return" and heavy["episodes"] == 2
    assert heavy["gap"] == pytest.approx(heavy["source"]["return"] - heavy["zero_shot"]["return"])
    assert (heavy["verdict"], heavy["advice"]) == experiment.recommend(heavy)


def test_a_failing_unit_is_named(monkeypatch):
    def fail(shared, item):
        raise ValueError(f"bad {item}")

    with pytest.raises(WorkerError, match=r"1 unit\(s\) failed \(a: ValueError: bad 1\)"):
        list(LocalBackend(1).run(fail, None, {"a": 1}))


def test_a_unit_run_with_other_package_versions_is_refused_and_not_saved(task, policy, tmp_path, monkeypatch):
    plan = experiment.make_plan(task, policy, "heavy", ["zero_shot", "scratch"], seeds=1)
    here = harness_module.versions()
    monkeypatch.setattr(harness_module, "versions", lambda: {**here, "torch": "0.0"})
    with pytest.raises(HarnessError, match=rf"unit heavy/scratch/0 ran on node local with other versions \(torch "
                                           rf"{re.escape(here['torch'])} there, 0.0 here\).*not saved"):
        experiment.run(plan, tmp_path / "run", workers=1)
    assert not (tmp_path / "run" / RESULTS_FILE).read_bytes()


def test_save_models_keeps_each_trained_units_model(task, policy, tmp_path: Path):
    plan = experiment.make_plan(task, policy, "heavy", ["finetune", "scratch"], seeds=1)
    run_dir = experiment.run(plan, tmp_path / "run", workers=1, save_models=True)
    for unit in plan.units():
        model = load_policy(experiment.model_path(run_dir / experiment.MODELS_DIR, unit.key))
        assert model.num_timesteps == plan.budget


def test_workers_started_ahead_run_the_units_and_are_stopped_when_unused():
    backend = LocalBackend(2)
    backend.start(4)
    finished = backend.run(pow, 2, {"a": 1, "b": 2, "c": 3})
    assert {key: (value, node) for key, value, node in finished} == {"a": (2, "local"), "b": (4, "local"),
                                                                      "c": (8, "local")}
    backend.start(4)
    processes = list(backend._pool._processes.values())
    backend.close()
    for process in processes:
        process.join(timeout=30)
    assert backend._pool is None and not any(process.is_alive() for process in processes)


def test_plan_and_results_read_back_as_the_typed_records_that_wrote_them(complete_run, plan):
    from sim2real.experiment.run_directory import read_results
    from sim2real.experiment.run_files import read_plan

    written = json.loads((complete_run / PLAN_FILE).read_text())
    assert read_plan(complete_run / PLAN_FILE).to_json() == written
    assert list(read_plan(complete_run / PLAN_FILE).units) == [unit.key for unit in plan.units()]
    lines = read_jsonl(complete_run / RESULTS_FILE)
    assert [record.to_json() for record in read_results(complete_run / RESULTS_FILE)] == lines
    assert [list(line) for line in lines] == [list(record.to_json()) for record in read_results(
        complete_run / RESULTS_FILE)]  # key order too: a rewritten results.jsonl is byte for byte the same


def test_the_report_reads_back_as_its_typed_record_and_a_foreign_one_is_named(complete_run, tmp_path):
    from sim2real.experiment.run_files import RunFileError, read_report

    report = read_report(complete_run / "report.json")
    assert report.to_json() == json.loads((complete_run / "report.json").read_text())
    assert report.metric == "return" and list(report.strategies) == ["zero_shot", "finetune", "scratch"]
    foreign = tmp_path / "report.json"
    foreign.write_text(json.dumps({**report.to_json(), "metric": "reward"}))
    with pytest.raises(RunFileError, match=r"report.json: 'metric' is 'reward'; accepted: success, return"):
        read_report(foreign)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda plan, records: plan.pop("threshold"),
     r"plan.json lacks 'threshold'; a transfer plan needs it as a mapping"),
    (lambda plan, records: plan.update(units="heavy/scratch/0"),
     r"plan.json: 'units' is 'heavy/scratch/0'; a transfer plan needs it as a list"),
    (lambda plan, records: records[3].update(seed="0"),
     r"results.jsonl: record 3: 'seed' must be an integer, got '0'"),
    (lambda plan, records: records[5].pop("return"),
     r"results.jsonl: record 5 lacks return \(each record needs"),
])
def test_a_damaged_plan_or_record_is_one_line_naming_the_file_and_key(complete_run, tmp_path, damage, message):
    from typer.testing import CliRunner

    from sim2real.cli import app

    run_dir = tmp_path / "damaged"
    shutil.copytree(complete_run, run_dir)
    plan = json.loads((run_dir / PLAN_FILE).read_text())
    records = read_jsonl(run_dir / RESULTS_FILE)
    damage(plan, records)
    (run_dir / PLAN_FILE).write_text(json.dumps(plan))
    (run_dir / RESULTS_FILE).write_text("".join(json.dumps(record) + "\n" for record in records))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.stderr) and len(result.stderr.strip().splitlines()) == 1
