"""The built-in PyBullet envs: API checks, seeding, isolation, the domain protocol reaching the physics."""

from __future__ import annotations

import math
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import sim2real
from sim2real.bullet.driving import DrivingEnv
from sim2real.bullet.grasping import GraspingEnv
from sim2real.errors import ConfigError
from sim2real.zoo import load_policy

IDS = sim2real.ENV_IDS


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass_with_warnings_as_errors(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gymnasium.make(env_id)
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
        env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_replays_the_same_episode(env_id):
    def rollout(seed: int) -> np.ndarray:
        env = gymnasium.make(env_id)
        env.action_space.seed(seed)
        observations = [env.reset(seed=seed)[0]]
        for _ in range(30):
            observations.append(env.step(env.action_space.sample())[0])
        env.close()
        return np.array(observations)

    assert np.array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_an_episode_does_not_depend_on_the_episodes_before_it():
    env = sim2real.make_env("driving", "wet")
    policy = sim2real.load_policy("driving-ppo-dr", env)

    def drive(seed: int) -> np.ndarray:
        obs, _ = env.reset(seed=seed)
        observations = [obs]
        for _ in range(40):
            obs, *_ = env.step(policy.predict(obs, deterministic=True)[0])
            observations.append(obs)
        return np.array(observations)

    first = drive(100)
    for seed in range(101, 105):
        drive(seed)
    assert np.array_equal(drive(100), first)


@pytest.mark.parametrize("env_class", [DrivingEnv, GraspingEnv])
def test_two_envs_in_one_process_do_not_interfere(env_class):
    def run(env: gymnasium.Env, actions: np.ndarray) -> list[np.ndarray]:
        return [env.step(a)[0] for a in actions]

    actions = np.random.default_rng(0).uniform(-1, 1, size=(25, *env_class().action_space.shape))
    alone = env_class()
    alone.reset(seed=1)
    expected = run(alone, actions)
    first, second = env_class(), env_class()
    first.reset(seed=1)
    second.reset(seed=2)
    interleaved = []
    for action in actions:
        interleaved.append(first.step(action)[0])
        second.step(-action)
    assert np.array_equal(np.array(expected), np.array(interleaved))
    assert first.client._client != second.client._client


@pytest.mark.parametrize("env_class", [DrivingEnv, GraspingEnv])
def test_env_attributes_and_observation_scale(env_class):
    env = env_class()
    obs, _ = env.reset(seed=0)
    assert env.dt > 0 and env.client.isConnected()
    values = [obs] + [env.step(env.action_space.sample())[0] for _ in range(40)]
    assert np.abs(np.array(values)).max() <= 5.0
    assert np.abs(np.array(values)).mean() < 1.0


def test_driving_mass_scale_reaches_every_link():
    env = DrivingEnv(mass_scale=2.0)
    env.reset(seed=0)
    masses = [env.client.getDynamicsInfo(env.car, link)[0] for link in range(-1, env.client.getNumJoints(env.car))]
    nominal = DrivingEnv()
    nominal.reset(seed=0)
    base = [nominal.client.getDynamicsInfo(nominal.car, link)[0] for link in range(-1, 12)]
    assert np.allclose(masses, 2 * np.array(base))


def test_set_domain_applies_at_the_next_reset():
    env = DrivingEnv()
    env.reset(seed=0)
    env.set_domain({"tyre_friction": 0.4})
    assert env.client.getDynamicsInfo(env.car, 2)[1] == pytest.approx(1.0)
    env.reset()
    assert env.client.getDynamicsInfo(env.car, 2)[1] == pytest.approx(0.4)
    assert env.domain["tyre_friction"] == 0.4


def test_cargo_adds_its_mass_and_is_removed_again():
    env = DrivingEnv(cargo_mass=10.0)
    env.reset(seed=0)
    bodies = env.client.getNumBodies()
    assert env.client.getDynamicsInfo(env._cargo[0], -1)[0] == pytest.approx(10.0)
    env.set_domain({"cargo_mass": 0.0})
    env.reset()
    assert env.client.getNumBodies() == bodies - 1


def test_grasping_object_follows_its_domain():
    env = GraspingEnv(object_shape="sphere", object_size=0.06, object_mass=0.3)
    env.reset(seed=0)
    shape = env.client.getCollisionShapeData(env.object, -1)[0]
    assert shape[2] == env.client.GEOM_SPHERE
    assert shape[3][0] == pytest.approx(0.03)
    assert env.client.getDynamicsInfo(env.object, -1)[0] == pytest.approx(0.3)


def test_grasping_box_aspect_stretches_one_side():
    env = GraspingEnv(object_size=0.04, object_aspect=2.5)
    env.reset(seed=0)
    shape = env.client.getCollisionShapeData(env.object, -1)[0]
    assert shape[2] == env.client.GEOM_BOX
    assert shape[3] == pytest.approx((0.04, 0.1, 0.04))


@pytest.mark.parametrize(("mount_yaw", "expected"), [(0.0, (1.0, 0.0)), (math.pi / 2, (0.0, 1.0))])
def test_a_turned_mount_turns_the_arms_moves_in_the_cells_frame(mount_yaw, expected):
    env = GraspingEnv(mount_yaw=mount_yaw)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        moved, *_ = env.step(np.array([1.0, 0.0, 0.0, 0.0, -1.0], dtype=np.float32))
    shift = (moved[:2] - obs[:2]) * 0.2  # the observation scales the gripper's x, y by 1/0.2 m
    assert shift / np.linalg.norm(shift) == pytest.approx(expected, abs=0.2)
    assert np.linalg.norm(shift) > 0.05


def test_gymnasium_make_accepts_domain_values_and_refuses_unknown_ones():
    env = gymnasium.make("sim2real/Driving-v0", tyre_friction=0.5)
    env.reset(seed=0)
    assert env.unwrapped.domain["tyre_friction"] == 0.5
    with pytest.raises(ConfigError, match="unknown domain parameter 'grip'"):
        gymnasium.make("sim2real/Driving-v0", grip=0.5)
    with pytest.raises(ConfigError, match="outside the bounds of 'tyre_friction'"):
        gymnasium.make("sim2real/Driving-v0", tyre_friction=7.0)


@pytest.mark.parametrize("env_class", [DrivingEnv, GraspingEnv])
def test_rgb_rendering_gives_a_frame(env_class):
    env = env_class(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    assert frame.std() > 5


def test_driving_success_needs_the_whole_track_and_leaving_it_fails():
    env = DrivingEnv()
    env.reset(seed=0)
    for _ in range(60):
        _, reward, terminated, _, info = env.step(np.array([1.0, 1.0]))
        if terminated:
            break
    assert terminated and info["off_track"] and not info["is_success"]
    assert reward < -4


# --- changed tasks: park (driving) and place (grasping) ----------------------------------------------


@pytest.mark.parametrize(("env_class", "goals"), [(DrivingEnv, "race, park"), (GraspingEnv, "pick, place")])
def test_an_unknown_goal_is_refused_naming_the_goals(env_class, goals):
    with pytest.raises(ValueError, match=f"goal 'fly' .*allowed: {goals}"):
        env_class(goal="fly")


def park_successes(env: DrivingEnv, episodes: int = 10) -> int:
    racer = load_policy("driving-ppo-nominal")
    successes = 0
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(racer.predict(obs, deterministic=True)[0])
            done = terminated or truncated
        successes += info["is_success"]
    return successes


def test_the_road_ends_at_the_bay_so_the_racer_stops_there_but_seldom_parks_in_it():
    assert park_successes(DrivingEnv(goal="park", track_length=5.0, bay_length=1.0, bay_width=0.7,
                                     park_heading=0.5)) >= 8
    assert park_successes(DrivingEnv(goal="park", track_length=5.0)) <= 3


def test_overshooting_the_bay_costs_what_approaching_it_earned():
    env = DrivingEnv(goal="park", track_length=1.0)
    env.reset(seed=0)
    total, distance = 0.0, 0.0
    while distance < 2.0:
        _, reward, terminated, _, info = env.step(np.array([0.0, 0.4]))
        total, distance = total + reward, info["distance"]
        assert not info["is_success"] and not terminated
    assert total < 0.5  # 2/m earned up to the bay, 2/m paid back beyond it, heading and lateral terms on top


def place(env: GraspingEnv, seed: int, *, release_early: bool = False) -> dict:
    """A scripted arm: reach the object, close, lift 6 cm, carry it over the spot, lower it, open."""
    obs, _ = env.reset(seed=seed)
    phase, closing = "reach", 0
    while True:
        relative, lift = obs[7:10] * 0.1, obs[10]
        action = np.zeros(5, np.float32)
        if phase == "reach":
            action[:3], action[4] = np.clip(relative / 0.02, -1, 1), -1
            phase = "close" if np.linalg.norm(relative) < 0.01 else phase
        elif phase == "close":
            action[4], closing = 1, closing + 1
            phase = "lift" if closing > 4 else phase
        elif phase == "lift":
            action[2], action[4] = 1, 1
            phase = ("open" if release_early else "carry") if lift > 1.2 else phase
        elif phase == "carry":
            action[:2], action[4] = np.clip(relative[:2] / 0.02, -0.5, 0.5), 1
            phase = "lower" if np.linalg.norm(relative[:2]) < 0.008 else phase
        elif phase == "lower":
            action[:2], action[2], action[4] = np.clip(relative[:2] / 0.02, -1, 1), -0.5, 1
            phase = "open" if lift < 0.1 else phase
        else:
            action[4] = -1
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info


def test_place_shows_the_spot_as_the_goal_once_lifted_and_succeeds_only_when_the_object_rests_on_it():
    env = GraspingEnv(goal="place", max_steps=80, spawn_yaw=(0.0, 0.0))
    assert env.observation_space == GraspingEnv().observation_space
    placed = [place(env, seed) for seed in range(5)]
    assert sum(info["is_success"] for info in placed) >= 3
    assert all(info["spot_distance"] < env.place_tolerance for info in placed if info["is_success"])
    dropped = [place(env, seed, release_early=True) for seed in range(3)]
    assert all(not info["carrying"] and not info["is_success"] for info in dropped)

