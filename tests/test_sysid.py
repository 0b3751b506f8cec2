"""System identification: recorded episodes in, domain parameters out; bad rollouts refused before any fitting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim2real import catalog, load_policy, make_env
from sim2real.sysid import Replay, SysIdError, fit_subsets, identify, load_trajectories, record, write_fit


@pytest.fixture(scope="module")
def wet_rollouts(tmp_path_factory) -> Path:
    """Five episodes of the randomized driving policy on the wet floor (tyre friction 0.75), no sensor noise."""
    path = tmp_path_factory.mktemp("rollouts") / "wet.jsonl"
    env = make_env("driving", "wet")
    record(load_policy("driving-ppo-dr", env), env, 5, path, seed=100)
    env.close()
    return path


def test_a_recording_holds_seeds_observations_and_actions(wet_rollouts: Path):
    lines = [json.loads(line) for line in wet_rollouts.read_text().splitlines()]
    assert [line["seed"] for line in lines] == [100, 101, 102, 103, 104]
    for line in lines:
        assert len(line["observations"]) == len(line["actions"]) + 1
        assert len(line["observations"][0]) == 24 and len(line["actions"][0]) == 2


def test_identification_recovers_the_tyre_friction_of_the_recorded_floor(wet_rollouts: Path, tmp_path: Path):
    fit = identify("driving", wet_rollouts, ["tyre_friction"], budget=100, horizon=40)
    assert fit.action_delay_steps == 0
    assert fit.params["tyre_friction"]["estimate"] == pytest.approx(0.75, rel=0.1)
    assert fit.discrepancy_after < 0.5 * fit.discrepancy_before

    spec = catalog.load("driving")
    paths = write_fit(fit, spec, load_trajectories(wet_rollouts, spec), tmp_path / "fit")
    assert {p.name for p in (tmp_path / "fit").iterdir()} == {"fit.json", "fit.md", "driving-fitted.yaml",
                                                              "trajectories.png"}
    env = make_env(paths["task"], "fitted")
    _, info = env.reset(seed=0)
    assert info["domain"]["tyre_friction"] == pytest.approx(fit.params["tyre_friction"]["estimate"])
    low, high = catalog.load(paths["task"]).raw["randomization"]["tyre_friction"]["uniform"]
    assert low < fit.params["tyre_friction"]["estimate"] < high


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(("content", "message"), [
    ([], "holds no episode"),
    ([{"seed": 0, "observations": [[0.0] * 23] * 3, "actions": [[0.0, 0.0]] * 2}],
     r"line 1: observations have shape \(3, 23\), the task driving needs \(steps \+ 1, 24\)"),
    ([{"seed": 0, "observations": [[0.0] * 24] * 3, "actions": [[0.0] * 5] * 2}],
     r"line 1: actions have shape \(2, 5\), the task driving needs \(steps, 2\)"),
    ([{"seed": 0, "observations": [[0.0] * 24] * 2, "actions": [[0.0, 0.0]] * 2}],
     "2 observations for 2 actions; expected one more observation than actions"),
    ([{"seed": 0, "actions": []}], "an episode needs the keys seed, observations, actions"),
])
def test_bad_rollouts_are_refused_naming_the_line(tmp_path: Path, content: list[object], message: str):
    path = write_lines(tmp_path / "bad.jsonl", content)
    with pytest.raises(SysIdError, match=message):
        identify("driving", path, ["tyre_friction"])


def test_a_missing_file_and_unknown_parameters_are_refused(wet_rollouts: Path, tmp_path: Path):
    with pytest.raises(SysIdError, match="does not exist"):
        identify("driving", tmp_path / "nothing.jsonl", ["tyre_friction"])
    with pytest.raises(SysIdError, match=r"cannot fit grip: .*fittable: .*tyre_friction"):
        identify("driving", wet_rollouts, ["grip"])
    with pytest.raises(SysIdError, match=r"cannot fit object_shape"):
        identify("grasping", wet_rollouts, ["object_shape"])
    with pytest.raises(SysIdError, match="budget"):
        identify("driving", wet_rollouts, ["tyre_friction"], budget=3)


def test_the_cli_refuses_bad_rollouts_in_one_line(tmp_path: Path):
    path = write_lines(tmp_path / "empty.jsonl", [])
    result = subprocess.run([sys.executable, "-m", "sim2real.cli", "sysid", "driving", "--rollouts", str(path),
                             "--params", "tyre_friction"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "holds no episode" in result.stderr


def test_mass_and_motor_force_scaled_together_give_the_same_trajectory_so_no_recording_can_separate_them(
        wet_rollouts: Path):
    """Every force on the car but the motor's scales with its mass: only their ratio reaches the observations.

    Doubling both (an exact scaling in floating point) replays a recording bit for bit; doubling the
    mass alone does not. This is why `sim2real sysid` fits their ratio but not each of them.
    """
    spec = catalog.load("driving")
    replay = Replay(spec, load_trajectories(wet_rollouts, spec)[:1], horizon=80)
    truth = spec.domain("wet")
    both = {**truth, "mass_scale": 2 * truth["mass_scale"], "motor_force_scale": 2 * truth["motor_force_scale"]}
    mass_only = {**truth, "mass_scale": 2 * truth["mass_scale"]}
    reference = replay.simulate(truth, replay.trajectories[0], 0)
    assert len(reference) > 40
    assert np.array_equal(replay.simulate(both, replay.trajectories[0], 0), reference)
    assert not np.allclose(replay.simulate(mass_only, replay.trajectories[0], 0)[:40], reference[:40], atol=1e-3)
    replay.close()


def test_fit_subsets_fits_each_disjoint_run_of_episodes_and_refuses_sizes_it_cannot_fill(wet_rollouts: Path):
    spec = catalog.load("driving")
    recordings = load_trajectories(wet_rollouts, spec)
    fits = fit_subsets(spec, recordings, ["tyre_friction"], [2, 5], budget=12, horizon=20)
    assert [len(fits[2]), len(fits[5])] == [2, 1]
    assert all(0.05 <= fit["tyre_friction"] <= 2.0 for runs in fits.values() for fit in runs)
    with pytest.raises(SysIdError, match=r"subset size must be an integer from 1 to 5 .*got 6"):
        fit_subsets(spec, recordings, ["tyre_friction"], [6])
