"""Every command that writes a folder resumes only its own run: each option changed in turn is refused in one line
(exit 2, the folder byte for byte as it was), the same command resumes exactly, and --force starts over."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import TINY_PPO_TRAIN, tiny_pendulum_bundle, write_task
from typer.testing import CliRunner

from sim2real.cli import app
from sim2real.rundir import RunFolderError, RunRecord, claim_file, claim_folder

PENDULUM = Path(__file__).resolve().parents[1] / "envs" / "examples" / "pendulum.yaml"


def invoke(*args: str) -> tuple[int, str]:
    """Run the CLI in this process: its exit code and what it wrote on stderr."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


def snapshot(path: Path) -> dict[str, str]:
    """The hash of every file under `path` (or of `path` itself), to show that nothing changed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_refused(changed: Sequence[str], folder: Path, naming: str) -> None:
    before = snapshot(folder)
    code, stderr = invoke(*changed)
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert naming in stderr, stderr
    assert snapshot(folder) == before


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny pendulum bundles that act differently."""
    task = write_task(tmp_path_factory, "tiny", PENDULUM.read_text().split("train:")[0] + TINY_PPO_TRAIN
                      + "threshold: {return: -300}\n")
    root = tmp_path_factory.mktemp("policies")
    card = {"task": "pendulum", "algo": "ppo", "randomized": False, "train_steps": 128, "seed": 0,
            "source_success": 0.0, "targets": {}}
    return (tiny_pendulum_bundle(task, root / "one", card),
            tiny_pendulum_bundle(task, root / "two", card, action_gain=-1.0))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_evaluate_resumes_only_the_same_evaluation(policies: tuple[Path, Path], tmp_path: Path):
    one, two = map(str, policies)
    out = tmp_path / "eval"
    base = ["evaluate", one, "--task", "pendulum", "--target", "light", "--episodes", "2", "--seed", "3",
            "--out", str(out)]
    assert invoke(*base)[0] == 0
    first = lines(out / "episodes.jsonl")
    other_task = tmp_path / "pendulum.yaml"
    other_task.write_text(PENDULUM.read_text().replace("mass: 2.5", "mass: 3.0"))
    changes = {"policy": [two if arg == one else arg for arg in base],
               "target": [*base, "--target", "heavy"],
               "seed": [*base, "--seed", "4"],
               "deterministic": [*base, "--stochastic"],
               "task_hash": [*base[:3], str(other_task), *base[4:]]}
    for setting, command in changes.items():
        assert_refused(command, out, setting)
    assert invoke(*base[:-4], "--episodes", "3", "--seed", "3", "--out", str(out))[0] == 0
    resumed = lines(out / "episodes.jsonl")
    assert resumed[:2] == first and [json.loads(line)["index"] for line in resumed] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["episodes"], summary["resumed"], summary["target"], summary["seed"]) == (3, 2, "light", 3)
    assert summary["policy"] == one
    assert invoke(*changes["seed"], "--force")[0] == 0
    replaced = [json.loads(line) for line in lines(out / "episodes.jsonl")]
    assert [episode["seed"] for episode in replaced] == [4, 5]
    assert json.loads((out / "run.json").read_text())["settings"]["seed"] == 4


def test_record_resumes_only_the_same_recording(policies: tuple[Path, Path], tmp_path: Path):
    one, two = map(str, policies)
    out = tmp_path / "rollouts.jsonl"
    base = ["record", one, "--task", "pendulum", "--episodes", "2", "--seed", "7", "--out", str(out)]
    assert invoke(*base)[0] == 0
    first = lines(out)
    assert json.loads(first[0])["run"]["settings"]["seed"] == 7 and len(first) == 3
    for setting, command in {"policy": [two if arg == one else arg for arg in base],
                             "target": [*base, "--target", "heavy"],
                             "seed": [*base, "--seed", "8"],
                             "known": [*base, "--known", "mass=2"]}.items():
        assert_refused(command, out, setting)
    assert invoke(*base, "--episodes", "3")[0] == 0
    resumed = lines(out)
    assert resumed[:3] == first and [json.loads(line)["seed"] for line in resumed[1:]] == [7, 8, 9]


def test_train_never_overwrites_and_continues_a_bundle(tmp_path: Path):
    out = tmp_path / "bundle"
    base = ["train", str(PENDULUM), "--algo", "ppo", "--steps", "256", "--n-envs", "1", "--episodes", "1",
            "--out", str(out)]
    assert invoke(*base)[0] == 0
    for command in (base, [*base, "--seed", "1"], [*base, "--target", "heavy"], [*base, "--randomize"],
                    [*base, "--steps", "512"], [*base, "--episodes", "2"]):
        assert_refused(command, out, "already holds a policy bundle")
    for option, value in (("--algo", "sac"), ("--seed", "1"), ("--n-envs", "2"), ("--target", "heavy")):
        assert_refused(["train", str(PENDULUM), "--continue", str(out), "--steps", "256", "--episodes", "1",
                        option, value], out, "--continue")
    card = json.loads((out / "card.json").read_text())
    assert invoke("train", str(PENDULUM), "--continue", str(out), "--steps", "256", "--episodes", "1")[0] == 0
    continued = json.loads((out / "card.json").read_text())
    assert continued["train_steps"] > card["train_steps"]
    assert continued["continued"] == [{"from_steps": card["train_steps"], "steps": 256,
                                       "wall_seconds": continued["continued"][0]["wall_seconds"]}]
    assert (continued["seed"], continued["n_envs"], continued["algo"]) == (card["seed"], card["n_envs"], "ppo")
    assert invoke(*base, "--seed", "1", "--force")[0] == 0
    assert json.loads((out / "card.json").read_text())["seed"] == 1


@pytest.mark.parametrize("arguments, naming", [
    (["train", "pendulum", "--steps", "0"], "steps"),
    (["train", "pendulum", "--n-envs", "0"], "n_envs"),
    (["train", "pendulum", "--episodes", "0"], "episodes"),
    (["train", "pendulum", "--seed", "-1"], "seed"),
    (["train", "pendulum", "--target", "moon"], "moon"),
    (["evaluate", "pendulum-x", "--task", "pendulum", "--seed", "-1"], "seed"),
    (["transfer", "pendulum", "--target", "heavy", "--strategies", ""], "--strategies"),
    (["sysid", "pendulum", "--rollouts", "x.jsonl", "--params", ","], "--params"),
    (["record", "pendulum-x", "--task", "pendulum", "--out", "r.jsonl", "--known", "mass=1,mass=5"], "twice"),
    (["serve", "pendulum", "--target", "heavy", "--port", "99999"], "99999"),
])
def test_careless_input_is_one_line_and_exit_2(arguments: list[str], naming: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    code, stderr = invoke(*arguments)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and naming in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_sysid_refuses_to_mix_another_fit_into_its_folder(policies: tuple[Path, Path], tmp_path: Path):
    one, two = map(str, policies)
    rollouts, other = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for policy, path in ((one, rollouts), (two, other)):
        assert invoke("record", policy, "--task", "pendulum", "--target", "heavy", "--episodes", "1",
                      "--out", str(path))[0] == 0
    out = tmp_path / "fit"
    base = ["sysid", "pendulum", "--rollouts", str(rollouts), "--budget", "52", "--horizon", "20", "--out", str(out)]
    assert invoke(*base)[0] == 0
    fit = (out / "fit.json").read_bytes()
    for setting, command in {"rollouts": [*base, "--rollouts", str(other)], "seed": [*base, "--seed", "1"],
                             "params": [*base, "--params", "mass"], "budget": [*base, "--budget", "60"],
                             "latency": [*base, "--latency", "1"]}.items():
        assert_refused(command, out, setting)
    assert invoke(*base)[0] == 0 and (out / "fit.json").read_bytes() == fit  # the same fit again: the same result
    assert invoke(*base, "--seed", "1", "--force")[0] == 0
    assert json.loads((out / "run.json").read_text())["settings"]["seed"] == 1


def test_a_run_that_wrote_nothing_yet_is_replaced_without_force(tmp_path: Path):
    first, second = RunRecord("record", {"seed": 0}), RunRecord("record", {"seed": 1})
    path = tmp_path / "r.jsonl"
    assert claim_file(path, first) is False and claim_file(path, first) is True
    assert claim_file(path, second) is False  # only a header there: nothing computed to lose
    path.write_text(path.read_text() + '{"seed": 1}\n')
    with pytest.raises(RunFolderError, match="seed is 1 there, 0 here"):
        claim_file(path, first)
    folder = tmp_path / "eval"
    assert claim_folder(folder, first, ["episodes.jsonl"]) is False
    assert claim_folder(folder, second, ["episodes.jsonl"]) is False  # run.json alone is replaced
    (folder / "episodes.jsonl").write_text("{}\n")
    with pytest.raises(RunFolderError, match="seed is 1 there, 0 here"):
        claim_folder(folder, first, ["episodes.jsonl"])
    assert claim_folder(folder, first, ["episodes.jsonl"], force=True) is False
    assert not (folder / "episodes.jsonl").exists()


def test_a_refusal_names_the_entry_that_differs_inside_nested_settings():
    def demo(budget: int, policy_hash: str) -> RunRecord:
        return RunRecord("demo", {"far_targets": [{"target": "truck", "retraining": {"budget": 8000}},
                                                  {"target": "warehouse", "retraining": {"budget": budget}}],
                                  "policies": {"a": "1" * 16, "b": policy_hash}}, version="1")

    here = demo(4000, "2" * 16)
    assert here.first_difference(demo(4000, "2" * 16)) is None
    assert here.first_difference(demo(8000, "2" * 16)) == "far_targets[1].retraining.budget is 8000 there, 4000 here"
    assert here.first_difference(demo(4000, "3" * 16)) == f"policies.b is {'3' * 16!r} there, {'2' * 16!r} here"
    shorter = RunRecord("demo", {**here.settings, "far_targets": here.settings["far_targets"][:1]}, version="1")
    assert here.first_difference(shorter).startswith("far_targets is [{'target': 'truck'")
    added = RunRecord("demo", {**here.settings, "policies": {"a": "1" * 16}}, version="1")
    assert here.first_difference(added) == f"policies.b is None there, {'2' * 16!r} here"
