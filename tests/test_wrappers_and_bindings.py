"""Domain randomization, reality-gap wrappers and bindings into envs that know nothing of sim2real."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
import pytest
import yaml
from gymnasium.utils.env_checker import check_env
from pybullet_utils.bullet_client import BulletClient
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import sim2real
from sim2real.errors import ConfigError
from sim2real.wrappers import ActionDelay, ObservationNoise


class FallingCubeEnv(gym.Env):
    """A PyBullet env that does not know sim2real: it rebuilds its world at every reset."""

    def __init__(self) -> None:
        self._p = BulletClient(connection_mode=pybullet.DIRECT)
        self._p.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.observation_space = gym.spaces.Box(-10, 10, shape=(3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._p.resetSimulation()
        self._p.setGravity(0, 0, -9.81)
        self._p.loadURDF("plane.urdf")
        self.cube = self._p.loadURDF("cube_small.urdf", [0, 0, 0.5])
        return self._obs(), {}

    def step(self, action):
        self._p.applyExternalForce(self.cube, -1, [float(action[0]) * 5, 0, 0], [0, 0, 0], self._p.WORLD_FRAME)
        self._p.stepSimulation()
        return self._obs(), 0.0, False, False, {}

    def _obs(self):
        return np.array(self._p.getBasePositionAndOrientation(self.cube)[0], dtype=np.float32)


def write_task(tmp_path: Path, params: dict, env_id: str = "Pendulum-v1", **extra) -> Path:
    task = {"id": env_id, "params": params, "train": {"algo": "ppo", "steps": 1000},
            "threshold": {"return": -300}, **extra}
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


CUBE_ID = f"{__name__}:FallingCubeEnv"


def test_bullet_binding_changes_the_mass_and_friction_in_pybullet(tmp_path):
    params = {
        "cube_mass": {"nominal": 1.0, "low": 0.1, "high": 10.0,
                      "bind": {"bullet": {"body": "baseLink", "property": "mass_scale"}}},
        "cube_friction": {"nominal": 0.5, "low": 0.0, "high": 2.0,
                          "bind": {"bullet": {"body": "baseLink", "property": "lateral_friction"}}},
    }
    path = write_task(tmp_path, params, CUBE_ID, targets={
        "heavy": {"kind": "far", "description": "x", "params": {"cube_mass": 4.0, "cube_friction": 1.5}}})
    nominal_mass = sim2real.make_env(path).unwrapped
    nominal_mass.reset(seed=0)
    base = nominal_mass._p.getDynamicsInfo(nominal_mass.cube, -1)[0]
    env = sim2real.make_env(path, "heavy")
    for _ in range(2):  # the env reloads its bodies at every reset; the binding follows
        env.reset(seed=0)
        cube = env.unwrapped.cube
        mass, friction = env.unwrapped._p.getDynamicsInfo(cube, -1)[:2]
        assert mass == pytest.approx(4.0 * base)
        assert friction == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ({"bullet": {"body": "baseLink", "links": ["wheel"]}}, "no link.*wheel"),
        ({"attr": "mass"}, "has no attribute 'mass'"),
        ({"call": "no_such_package.module:function"}, "cannot import module 'no_such_package.module'"),
        ({"call": "math:no_such_function"}, "module 'math' has no callable 'no_such_function'"),
        ({"glue": "x"}, "exactly one of 'attr', 'bullet', 'call'"),
    ],
)
def test_bad_bindings_fail_when_the_env_is_built(tmp_path, bind, message):
    path = write_task(tmp_path, {"p": {"nominal": 1.0, "low": 0.0, "high": 2.0, "bind": bind}}, CUBE_ID)
    env_class = FallingCubeEnv
    if "bullet" in bind:  # bodies exist only after a reset: check against a world that has them
        env_class.__init__ = _loaded_init
    with pytest.raises(ConfigError, match=message) as error:
        sim2real.make_env(path)
    assert "task.yaml" in str(error.value)


def _loaded_init(self) -> None:
    FallingCubeEnv.__bases__[0].__init__(self)
    self._p = BulletClient(connection_mode=pybullet.DIRECT)
    self._p.setAdditionalSearchPath(pybullet_data.getDataPath())
    self._p.loadURDF("cube_small.urdf")
    self.observation_space = gym.spaces.Box(-10, 10, shape=(3,), dtype=np.float32)
    self.action_space = gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float32)


def test_a_param_without_binding_on_a_plain_env_is_refused(tmp_path):
    path = write_task(tmp_path, {"mass": {"nominal": 1.0, "low": 0.1, "high": 5.0}})
    with pytest.raises(ConfigError, match="'mass' has no 'bind' entry.*does not implement set_domain"):
        sim2real.make_env(path)


def swing_speed(env: gym.Env, torque: float = 2.0, steps: int = 10) -> float:
    env.reset(seed=0)
    env.unwrapped.state = np.array([math.pi, 0.0])  # hanging at rest
    for _ in range(steps):
        obs, *_ = env.step(np.array([torque], dtype=np.float32))
    return abs(float(obs[2]))


def test_attr_binding_makes_the_pendulum_physically_heavier():
    light, heavy = sim2real.make_env("pendulum"), sim2real.make_env("pendulum", "heavy")
    assert heavy.unwrapped.m == 2.5 and heavy.unwrapped.l == 1.4
    assert swing_speed(heavy) < 0.5 * swing_speed(light)


def record_mass(env, value):
    env.recorded_mass = value


def test_call_binding_calls_the_users_function(tmp_path):
    path = write_task(tmp_path, {"mass": {"nominal": 1.0, "low": 0.1, "high": 5.0,
                                          "bind": {"call": f"{__name__}:record_mass"}}},
                      targets={"heavy": {"kind": "far", "description": "x", "params": {"mass": 3.0}}})
    env = sim2real.make_env(path, "heavy")
    env.reset(seed=0)
    assert env.unwrapped.recorded_mass == 3.0


def test_randomization_puts_the_domain_in_info_and_changes_it_every_episode():
    env = sim2real.make_env("pendulum", randomize=True)
    domains = []
    for seed in range(5):
        _, info = env.reset(seed=seed)
        domains.append(info["domain"])
        assert env.unwrapped.m == info["domain"]["mass"]
        assert 0.7 <= info["domain"]["mass"] <= 1.3
    assert len({d["mass"] for d in domains}) == 5


def test_randomization_scale_widens_the_ranges():
    env = sim2real.make_env("pendulum", randomize=True, randomization_scale=2.0)
    masses = [env.reset(seed=s)[1]["domain"]["mass"] for s in range(200)]
    assert min(masses) < 0.6 and max(masses) > 1.4


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_sub_envs_get_their_own_reproducible_streams(vec_env_cls):
    def domains() -> list[float]:
        venv = make_vec_env(sim2real.make_env, n_envs=3, seed=11, vec_env_cls=vec_env_cls,
                            env_kwargs={"task": "pendulum", "randomize": True})
        venv.reset()
        masses = [info["domain"]["mass"] for info in venv.reset_infos]
        venv.close()
        return masses

    first = domains()
    assert len(set(first)) == 3
    assert first == domains()


def test_terminal_observation_survives_autoreset_with_wrappers_on():
    venv = DummyVecEnv([lambda: sim2real.make_env("driving", "real", randomize=True)])
    venv.seed(0)
    venv.reset()
    for _ in range(400):
        obs, _, dones, infos = venv.step(np.array([[1.0, 1.0]]))
        if dones[0]:
            break
    assert dones[0]
    terminal = infos[0]["terminal_observation"]
    assert terminal.shape == obs[0].shape and not np.array_equal(terminal, obs[0])


def test_check_env_passes_with_every_wrapper_on():
    env = sim2real.make_env("driving", "real", randomize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # check_env always warns that a wrapped env is not its unwrapped self; that is the point here
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version")
        check_env(env, skip_render_check=True, skip_close_check=True)


def test_observation_noise_has_the_requested_std():
    clean = sim2real.make_env("pendulum")
    noisy = ObservationNoise(sim2real.make_env("pendulum"), std=(0.05, 0.05, 0.2))
    differences = np.array([noisy.reset(seed=s)[0] - clean.reset(seed=s)[0] for s in range(2000)])
    assert np.allclose(differences.std(axis=0), [0.05, 0.05, 0.2], rtol=0.1)


def test_action_delay_applies_each_action_k_steps_late():
    actions = np.random.default_rng(0).uniform(-2, 2, size=(20, 1)).astype(np.float32)
    delayed = ActionDelay(sim2real.make_env("pendulum"), steps=2)
    direct = sim2real.make_env("pendulum")
    delayed.reset(seed=3)
    direct.reset(seed=3)
    shifted = [np.zeros(1, np.float32)] * 2 + list(actions[:-2])
    assert np.allclose([delayed.step(a)[0] for a in actions], [direct.step(a)[0] for a in shifted])


def test_reality_gap_of_a_target_is_applied_by_make_env():
    env = sim2real.make_env("driving", "real")
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    assert {"ObservationNoise", "ActionNoise", "ActionDelay", "DomainWrapper"} <= set(names)
    assert "ObservationNoise" not in _wrapper_names(sim2real.make_env("driving", "real", reality_gap=False))


def _wrapper_names(env: gym.Env) -> list[str]:
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    return names


def test_the_pendulum_plug_in_randomizes_trains_and_evaluates_on_a_shifted_target():
    from sim2real.training import train

    result = train("pendulum", randomize=True, algo="ppo", steps=2048, n_envs=2, card_episodes=5, eval_every=1024,
                   eval_episodes=2, hyperparameters={"n_steps": 256, "batch_size": 128})
    card = result.card
    assert card["randomized"] and card["train_steps"] == 2048
    assert [h["steps"] for h in result.history][:2] == [1024, 2048]
    assert set(card["targets"]) == {"source", "heavy", "light"}
    # the same policy and episode seeds on another bob: the shifted physics gives another outcome
    assert card["targets"]["heavy"]["return"] != card["targets"]["source"]["return"]
