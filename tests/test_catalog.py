"""The task catalogue: shipped YAMLs load, and every malformed YAML is named by file, key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import sim2real
from sim2real import catalog
from sim2real.bullet.driving import DrivingEnv
from sim2real.bullet.grasping import GraspingEnv
from sim2real.errors import ConfigError
from sim2real.factory import make_env

ENV_CLASSES = {"driving": DrivingEnv, "grasping": GraspingEnv}


@pytest.mark.parametrize("name", ["driving", "grasping"])
def test_shipped_tasks_load_with_near_far_and_real_targets(name):
    spec = sim2real.load(name)
    kinds = {target.kind for target in spec.targets.values()}
    assert {"near", "far", "real"} <= kinds
    assert spec.threshold.metric == "success"
    assert spec.train.config().steps > 0


SHIPPED_HASHES = {"driving": "b4fecaae2914", "grasping": "3375f585e968"}
"""The tasks' hashes from when their YAMLs still spelled out every parameter: leaving them to the env changed none."""


@pytest.mark.parametrize("name", ["driving", "grasping"])
def test_shipped_tasks_take_their_params_from_the_env_class_alone(name):
    assert "params" not in yaml.safe_load((catalog.envs_dir() / f"{name}.yaml").read_text())
    spec = sim2real.load(name)
    assert spec.params == ENV_CLASSES[name].domain_params()
    assert spec.spec_hash == SHIPPED_HASHES[name]  # runs, cards and fits made before still match
    assert list(spec.raw).index("params") == list(spec.raw).index("kwargs") + 1  # a fitted task YAML as before


def test_params_written_but_empty_stay_an_error_not_the_envs():
    raw = {"id": "sim2real/Driving-v0", "params": None, "train": {"algo": "ppo", "steps": 1000},
           "threshold": {"success": 0.8}}
    with pytest.raises(ConfigError, match=r"key 'params'"):
        catalog.parse(raw)


def test_a_task_without_params_for_an_env_that_declares_none_is_one_error_naming_params():
    raw = {"id": "Pendulum-v1", "train": {"algo": "ppo", "steps": 1000}, "threshold": {"return": -300}}
    with pytest.raises(ConfigError, match=r"key 'params': no 'params' given, and env 'Pendulum-v1' declares none"):
        catalog.parse(raw)
    with pytest.raises(ConfigError, match=r"key 'params': no 'params' given, and the env's own cannot be read: "
                                          r".*cannot import module 'no_such_module'"):
        catalog.parse({**raw, "id": "no_such_module:Env"})


def test_a_path_works_wherever_a_name_does():
    path = catalog.envs_dir() / "driving.yaml"
    assert sim2real.load(str(path)).name == sim2real.load("driving").name


def test_target_domain_overrides_the_nominal_values():
    spec = sim2real.load("driving")
    assert spec.domain("wet")["tyre_friction"] == 0.75
    assert spec.domain("source")["tyre_friction"] == 1.0


def test_the_pendulum_example_is_in_the_catalogue():
    assert "pendulum" in catalog.available()


def base_yaml() -> dict:
    return yaml.safe_load((catalog.envs_dir() / "examples" / "pendulum.yaml").read_text())


def mutate(path: str, value):
    """A copy of the pendulum YAML with `path` (dotted) set to `value`, or deleted when value is DELETE."""
    data = copy.deepcopy(base_yaml())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()

BAD_YAMLS = [
    ("params.mass.nominal", 9.0, "params.mass.nominal", "outside the bounds"),
    ("params.mass.low", "light", "params.mass", "'low' must be a number"),
    ("params.mass.colour", "red", "params.mass", "unknown key.*colour.*allowed"),
    ("params.mass.nominal", DELETE, "params.mass", "missing required key.*nominal"),
    ("targets.heavy.params", {"mass": 9.0}, "targets.heavy.params.mass", "outside the bounds"),
    ("targets.heavy.params", {"gravity": 9.0}, "targets.heavy.params.gravity", "unknown domain parameter 'gravity'"),
    ("targets.heavy.kind", "medium", "targets.heavy.kind", "allowed: near, far, real"),
    ("targets.heavy.description", DELETE, "targets.heavy", "missing required key.*description"),
    ("targets.heavy.reality_gap", {"obs_noise_std": -1}, "obs_noise_std", ">= 0"),
    ("targets.heavy.reality_gap", {"action_delay_steps": 1.5}, "action_delay_steps", "integer >= 0"),
    ("targets.heavy.reality_gap", {"latency": 2}, "reality_gap", "unknown key.*latency"),
    ("randomization.gravity", {"uniform": [1, 2]}, "randomization.gravity", "unknown domain parameter"),
    ("randomization.mass", {"uniform": [2, 1]}, "randomization.mass", "low <= high"),
    ("train.algo", "dqn", "train.algo", "allowed: ppo, sac"),
    ("train.sac.steps", -5, "train.sac.steps", "integer > 0"),
    ("threshold", {"reward": 3}, "threshold", "success: rate"),
    ("threshold", {"success": 1.5}, "threshold.success", r"\[0, 1\]"),
    ("train.stop_at", {"success": 1.5}, "train.stop_at.success", r"\[0, 1\]"),
    ("train.stop_at", 0.95, "train.stop_at", "success: rate"),
    ("train.eval_gate", 2, "train.eval_gate", r"\[0, 1\]"),
    ("transfer.eval_every", 50000, "transfer.eval_every", "exceeds the budget"),
    ("id", DELETE, "top level", "missing required key.*id"),
    ("colour", "red", "top level", "unknown key.*colour"),
    ("targets.source", {"kind": "near", "description": "x"}, "targets.source", "reserved"),
]


@pytest.mark.parametrize(("path", "value", "key", "message"), BAD_YAMLS, ids=[b[0] + ":" + b[3] for b in BAD_YAMLS])
def test_bad_yaml_is_named_by_file_key_and_allowed_values(tmp_path: Path, path, value, key, message):
    task_file = tmp_path / "task.yaml"
    task_file.write_text(yaml.safe_dump(mutate(path, value)))
    with pytest.raises(ConfigError, match=message) as error:
        catalog.load(task_file)
    assert str(task_file) in str(error.value)
    assert key in str(error.value)


def test_malformed_yaml_names_the_file(tmp_path: Path):
    task_file = tmp_path / "broken.yaml"
    task_file.write_text("id: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        catalog.load(task_file)


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path):
    task_file = tmp_path / "list.yaml"
    task_file.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        catalog.load(task_file)


def test_missing_file_and_unknown_name_list_what_exists():
    with pytest.raises(ConfigError, match="no such task file: nowhere.yaml"):
        catalog.load("nowhere.yaml")
    with pytest.raises(ConfigError, match="unknown task 'flying'.*driving.*grasping"):
        catalog.load("flying")


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown target 'snow'.*source, wet, truck, real"):
        sim2real.load("driving").target("snow")


def test_a_target_task_the_env_rejects_is_a_config_error_naming_the_value():
    raw = yaml.safe_load(catalog.resolve("driving").read_text())
    raw["targets"]["park"]["task"]["goal"] = "fly"
    spec = catalog.parse(raw, source="driving.yaml")
    with pytest.raises(ConfigError, match=r"rejected its kwargs \['goal', 'track_length'\]: goal 'fly' is not a "
                                          r"driving goal \(allowed: race, park\)"):
        make_env(spec, "park")
