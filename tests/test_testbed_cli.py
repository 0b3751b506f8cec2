"""`sim2real evaluate --testbed` end to end: a real server process, killed mid-run, and a rerun that resumes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stable_baselines3 import PPO

import sim2real
from sim2real.testbed.process import ServerProcess

STAND_IN = ("sim2real.factory:make_env", {"task": "driving", "target": "real"})


@pytest.fixture(scope="module")
def policy_zip(tmp_path_factory) -> Path:
    """An untrained driving policy: short episodes, enough to exercise the bridge."""
    path = tmp_path_factory.mktemp("policy") / "untrained.zip"
    PPO("MlpPolicy", sim2real.make_env("driving"), seed=0, policy_kwargs={"net_arch": [16]}).save(path)
    return path


def evaluate_cli(policy: Path, port: int, out: Path, episodes: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "sim2real.cli", "evaluate", str(policy), "--task", "driving", "--testbed",
               f"tcp://127.0.0.1:{port}", "--episodes", str(episodes), "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def episode_indices(out: Path) -> list[int]:
    path = out / "episodes.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["index"] for line in path.read_text().splitlines() if line.strip()]


def test_killed_server_is_reported_and_a_rerun_resumes_to_exactly_n(policy_zip: Path, tmp_path: Path):
    out, episodes = tmp_path / "run", 40
    server = ServerProcess(*STAND_IN)
    client = evaluate_cli(policy_zip, server.port, out, episodes)
    deadline = time.monotonic() + 60
    while len(episode_indices(out)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.process.kill()
    killed_at = time.monotonic()
    server.process.wait()
    server.stop()
    _, stderr = client.communicate(timeout=30)
    assert client.returncode != 0
    assert time.monotonic() - killed_at < 5
    assert "testbed" in stderr and "Traceback" not in stderr
    done = episode_indices(out)
    assert 3 <= len(done) < episodes and done == list(range(len(done)))

    with ServerProcess(*STAND_IN) as fresh:
        rerun = evaluate_cli(policy_zip, fresh.port, out, episodes)
        _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    assert episode_indices(out) == list(range(episodes))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == episodes and summary["resumed"] == len(done)
    assert summary["latency_ms"]["p50"] > 0

    with ServerProcess(*STAND_IN) as again:  # every episode on disk: nothing to run, nothing timed
        complete = evaluate_cli(policy_zip, again.port, out, episodes)
        stdout, stderr = complete.communicate(timeout=120)
    assert complete.returncode == 0, stderr
    assert "none timed (every episode resumed from disk)" in " ".join(stdout.split())


def test_a_policy_that_does_not_fit_the_server_is_refused_naming_both(tmp_path: Path):
    grasp_policy = tmp_path / "grasp.zip"
    PPO("MlpPolicy", sim2real.make_env("grasping"), seed=0, policy_kwargs={"net_arch": [8]}).save(grasp_policy)
    with ServerProcess(*STAND_IN) as server:
        client = evaluate_cli(grasp_policy, server.port, tmp_path / "out", 2)
        _, stderr = client.communicate(timeout=60)
    assert client.returncode == 2
    grasp_shape = sim2real.make_env("grasping").observation_space.shape
    assert f"policy expects Box(-5.0, 5.0, {grasp_shape}" in stderr
    assert "offers Box(-5.0, 5.0, (24,)" in stderr


@pytest.mark.parametrize(("env", "message"), [
    ("no_such_module:Env", "error: key '--env': cannot import module 'no_such_module' for 'no_such_module:Env'"),
    ("math:no_such_env", "error: key '--env': module 'math' has no callable 'no_such_env'"),
])
def test_a_server_process_given_an_env_it_cannot_find_says_so_in_one_line(env, message, capsys):
    from sim2real.testbed.process import main

    assert main(["--env", env, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err  # no silent fall-back to gymnasium.make


def test_gymnasiums_module_and_id_form_still_reaches_gym_make():
    from sim2real.testbed.process import env_factory_from_spec

    env = env_factory_from_spec("gymnasium.envs.classic_control:Pendulum-v1")()
    try:
        assert env.spec is not None and env.spec.id == "Pendulum-v1"
    finally:
        env.close()
