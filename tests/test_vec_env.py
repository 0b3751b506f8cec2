"""WorkerVecEnv: several envs per worker process, the same episodes as in process, errors that say what failed."""

from __future__ import annotations

import os
import signal
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics
from stable_baselines3.common.vec_env import DummyVecEnv

from sim2real import catalog
from sim2real.env_group import SeededEnvFactory
from sim2real.factory import make_env
from sim2real.models import build_vec_env
from sim2real.vec_env import EnvWorkerError, WorkerVecEnv


def _rollout(venv, steps: int, seed: int = 0) -> list[np.ndarray]:
    """Observations, rewards, dones and terminal observations of `steps` seeded random vector steps."""
    rng = np.random.default_rng(seed)
    trace = [venv.reset()]
    for _ in range(steps):
        actions = rng.uniform(-1, 1, size=(venv.num_envs, *venv.action_space.shape)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        trace += [obs, rewards, dones]
        trace += [info["terminal_observation"] for info in infos if "terminal_observation" in info]
    venv.close()
    return trace


def test_same_episodes_as_in_process_whatever_the_number_of_workers():
    spec = catalog.load("driving")
    in_process = _rollout(build_vec_env(spec, "wet", False, n_envs=5, seed=3, parallel=False), 150)
    factories = [SeededEnvFactory(partial(make_env, spec, "wet"), 3 + rank) for rank in range(5)]
    for workers in (1, 2, 5):
        venv = WorkerVecEnv(factories, workers=workers)
        venv.seed(3)
        in_workers = _rollout(venv, 150)
        assert len(in_workers) > 1 + 3 * 150  # episodes ended: their terminal observations are in the trace
        assert len(in_workers) == len(in_process)
        for ours, theirs in zip(in_workers, in_process, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_attributes_and_methods_reach_the_env_they_name():
    spec = catalog.load("driving")
    venv = build_vec_env(spec, "source", False, n_envs=3, seed=0, parallel=True)
    try:
        assert isinstance(venv, WorkerVecEnv) and len(venv.slots) == 2 and len(venv.processes) == 1  # env 0 here
        venv.reset()
        venv.set_attr("tag", "middle", indices=[1])
        assert venv.get_attr("tag", indices=[1]) == ["middle"]
        assert venv.has_attr("domain") and not venv.has_attr("no_such_attribute")
        domains = venv.env_method("get_wrapper_attr", "domain", indices=[0, 2])
        assert len(domains) == 2 and domains[0]["tyre_friction"] == 1.0
        assert venv.env_is_wrapped(RecordEpisodeStatistics) == [True, True, True]
        assert venv.env_is_wrapped(gym.wrappers.TimeLimit) == [False, False, False]
    finally:
        venv.close()
    assert all(not process.is_alive() for process in venv.processes)


class _BreaksOnStep(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        raise RuntimeError("the motor driver is on fire")


def test_an_env_failure_in_a_worker_is_raised_with_its_traceback():
    venv = WorkerVecEnv([_BreaksOnStep, _BreaksOnStep, _BreaksOnStep], workers=2)
    venv.reset()
    with pytest.raises(EnvWorkerError, match="the motor driver is on fire"):
        venv.step(np.zeros((3, 1), np.float32))
    venv.close()
    for process in venv.processes:
        process.join(timeout=5)
        assert not process.is_alive()


def test_in_process_and_worker_envs_seed_their_action_spaces_like_make_vec_env():
    spec = catalog.load("driving")
    venv = DummyVecEnv([SeededEnvFactory(partial(make_env, spec), 7)])
    expected = make_env(spec).action_space
    expected.seed(7)
    np.testing.assert_array_equal(venv.envs[0].action_space.sample(), expected.sample())
    venv.close()


def test_a_worker_gone_is_named_at_the_next_step_and_closing_after_it_is_no_error():
    """A Ctrl-C reaches the workers too: the next step says a worker died, and close() still cleans up."""
    spec = catalog.load("driving")
    factories = [SeededEnvFactory(partial(make_env, spec), rank) for rank in range(4)]
    actions = np.zeros((4, 2), np.float32)

    interrupted = WorkerVecEnv(factories, workers=2)
    interrupted.reset()
    os.kill(interrupted.processes[0].pid, signal.SIGINT)
    interrupted.processes[0].join(timeout=10)
    with pytest.raises(EnvWorkerError, match="died without a word"):
        interrupted.step(actions)
    interrupted.close()

    killed_mid_step = WorkerVecEnv(factories, workers=2)
    killed_mid_step.reset()
    killed_mid_step.step_async(actions)
    os.kill(killed_mid_step.processes[0].pid, signal.SIGKILL)
    killed_mid_step.processes[0].join(timeout=10)
    killed_mid_step.close()  # its answer never comes: closing drains what it can and moves on
    assert killed_mid_step.closed
    assert not any(process.is_alive() for process in (*interrupted.processes, *killed_mid_step.processes))
