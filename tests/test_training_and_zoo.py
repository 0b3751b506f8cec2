"""Training through the CLI, bundles and the zoo: real learning, reproducible curves, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from sim2real import make_env
from sim2real.defaults import EVAL_SEED
from sim2real.policy_evaluation import evaluate_policy
from sim2real.training import train
from sim2real.zoo import BundleError, load_card, load_policy

CLI = [sys.executable, "-m", "sim2real.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def driving_bundle(tmp_path_factory) -> Path:
    """A driving policy trained through the CLI, stopped at the task's 95 % (about 70 s on 2 cores, the card included).

    The default seed gets there at about 20k steps; 50k is the ceiling.
    """
    root = tmp_path_factory.mktemp("bundle")
    out = root / "driving-small"
    result = run_cli("train", "driving", "--steps", "50000", "--episodes", "20", "--out", str(out),
                     "--tensorboard", str(root / "tensorboard"))
    assert result.returncode == 0, result.stderr
    return out


def test_cli_training_learns_and_its_card_matches_an_independent_evaluation(driving_bundle: Path):
    card = load_card(driving_bundle)
    assert card["source_success"] >= 0.8, card  # a random policy scores 0 here
    assert set(card["targets"]) == {"source", "wet", "truck", "real", "park"}
    independent = evaluate_policy(driving_bundle, "driving", target="wet", episodes=20, seed=EVAL_SEED)
    assert independent["success_rate"] == card["targets"]["wet"]["success"]
    assert independent["mean_return"] == pytest.approx(card["targets"]["wet"]["return"], abs=1e-3)
    assert (driving_bundle / "card.md").read_text().startswith("# driving-small")
    assert list((driving_bundle.parent / "tensorboard").iterdir())


def test_a_bundle_loads_with_plain_stable_baselines3(driving_bundle: Path):
    model = PPO.load(driving_bundle / "model.zip")
    assert model.observation_space.shape == (24,)


def test_evaluate_cli_writes_episodes_and_summary_and_resumes(driving_bundle: Path, tmp_path: Path):
    out = tmp_path / "eval"
    first = run_cli("evaluate", str(driving_bundle), "--task", "driving", "--episodes", "3", "--out", str(out))
    assert first.returncode == 0, first.stderr
    second = run_cli("evaluate", str(driving_bundle), "--task", "driving", "--episodes", "5", "--out", str(out))
    assert second.returncode == 0, second.stderr
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 5 and summary["resumed"] == 3
    assert {"success_rate", "mean_return", "aborted"} <= set(summary)


def test_same_seed_gives_the_same_learning_curve():
    def run() -> tuple[list, torch.Tensor]:
        result = train("pendulum", algo="ppo", steps=1024, n_envs=2, seed=5, eval_every=512, eval_episodes=2,
                       card_episodes=2, hyperparameters={"n_steps": 256, "batch_size": 128})
        return result.history, torch.cat([p.flatten() for p in result.model.policy.parameters()])

    (history_a, weights_a), (history_b, weights_b) = run(), run()
    assert history_a == history_b
    assert torch.equal(weights_a, weights_b)


def test_training_stops_at_the_first_evaluation_reaching_the_stop_level(tmp_path: Path):
    """A return any policy reaches ends training at the first evaluation; the card says where and why."""
    result = train("pendulum", algo="ppo", steps=4096, n_envs=2, seed=1, eval_every=512, eval_episodes=2,
                   card_episodes=2, hyperparameters={"n_steps": 256, "batch_size": 128}, stop_at=-1e6,
                   out=tmp_path / "stopped")
    assert result.card["stopped_at_steps"] == 512 == result.model.num_timesteps
    assert result.card["stop_at"] == {"return": -1e6}
    assert [entry["steps"] for entry in result.history] == [512]  # no second evaluation at the end
    full = train("pendulum", algo="ppo", steps=1024, n_envs=2, seed=1, eval_every=512, eval_episodes=2,
                 card_episodes=2, hyperparameters={"n_steps": 256, "batch_size": 128}, stop_at=-1e6, all_steps=True)
    assert full.model.num_timesteps == 1024 and full.card["stopped_at_steps"] is None


def test_a_policy_whose_spaces_do_not_fit_names_both(driving_bundle: Path):
    result = run_cli("evaluate", str(driving_bundle), "--task", "grasping", "--episodes", "1")
    assert result.returncode == 2
    grasp_shape = make_env("grasping").observation_space.shape
    assert "Box(-5.0, 5.0, (24,)" in result.stderr and str(grasp_shape) in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_zip_and_incomplete_card_are_clear_errors(driving_bundle: Path, tmp_path: Path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    with pytest.raises(BundleError, match="not a stable-baselines3 model zip"):
        load_policy(broken)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.zip").write_bytes((driving_bundle / "model.zip").read_bytes())
    (bundle / "card.json").write_text(json.dumps({"task": "driving"}))
    with pytest.raises(BundleError, match="lacks the field.*algo.*a card needs"):
        load_policy(bundle)


def test_a_plain_sb3_zip_is_detected_and_loaded(driving_bundle: Path, tmp_path: Path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(driving_bundle / "model.zip") as source, zipfile.ZipFile(plain, "w") as copy:
        for item in source.infolist():
            copy.writestr(item, source.read(item.filename))
    model = load_policy(plain)
    obs = np.zeros(24, dtype=np.float32)
    assert model.predict(obs, deterministic=True)[0].shape == (2,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zoo", "show", "no-such-policy"], "unknown policy 'no-such-policy' (zoo:"),
        (["train", "flying"], "unknown task 'flying'"),
        (["train", "driving", "--target", "snow"], "unknown target 'snow'"),
        (["train", "driving", "--algo", "dqn"], "unknown algorithm 'dqn'"),
        (["train", "driving", "--stop-at", "1.5"], "--stop-at 1.5: driving is scored by success"),
        (["evaluate", "nowhere.zip", "--task", "driving"], "no such policy file: nowhere.zip"),
        (["evaluate", "x.zip", "--task", "driving", "--episodes", "0"], "episodes must be an integer >= 1, got 0"),
        (["transfer", "driving", "--target", "truck", "--strategies", "residual:utd=0,scratch", "--out", "unused"],
         "residual: utd (gradient steps per target step, SAC) must be an integer >= 1"),
        (["transfer", "driving", "--target", "truck", "--strategies", "residual:warmup,scratch", "--out", "unused"],
         "strategy option 'warmup' in 'residual:warmup' is not option=value"),
        (["transfer", "driving", "--target", "truck", "--strategies", "finetune:utd=2,scratch", "--out", "unused"],
         "utd (gradient steps per target step) applies to off-policy algorithms (SAC), not to PPO"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_gif_records_the_episodes(tmp_path: Path):
    import imageio.v3 as iio

    gif = tmp_path / "wet.gif"
    result = run_cli("evaluate", "driving-ppo-dr", "--task", "driving", "--target", "wet", "--episodes", "1",
                     "--gif", str(gif))
    assert result.returncode == 0, result.stderr
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] > 20 and frames.shape[1:] == (240, 320, 3)
    assert frames.std() > 5
