"""SafetyShield: non-finite actions never reach the env; applied actions stay in bounds and rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim2real.testbed import RemoteEnv, SafetyShield, TestbedError, TestbedServer

LOW = np.array([-1.0, -2.0], dtype=np.float32)
HIGH = np.array([1.0, 0.5], dtype=np.float32)
MAX_DELTA = np.array([0.1, 0.25])


class Recorder(gym.Env):
    """An env that records every action it receives; its observation counts steps."""

    def __init__(self, episode_length: int = 10**9) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self.episode_length = episode_length
        self.received: list[np.ndarray] = []
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self.received.append(np.array(action))
        self._t += 1
        return np.full(1, self._t, np.float32), 1.0, False, self._t >= self.episode_length, {"t": self._t}


@pytest.fixture
def shield() -> SafetyShield:
    shielded = SafetyShield(Recorder(), max_delta=MAX_DELTA)
    shielded.reset(seed=0)
    return shielded


def test_in_range_actions_pass_unchanged_and_are_logged(shield: SafetyShield) -> None:
    _, reward, terminated, truncated, info = shield.step([0.05, -0.1])
    assert (reward, terminated, truncated, info["t"]) == (1.0, False, False, 1)
    np.testing.assert_array_equal(info["applied_action"], np.float32([0.05, -0.1]))
    np.testing.assert_array_equal(info["requested_action"], [0.05, -0.1])
    assert info["applied_action"].dtype == np.float32 and "aborted" not in info
    assert len(shield.log) == 1 and shield.log[0][1] is not None


def test_actions_are_clipped_to_bounds_then_to_the_step_change(shield: SafetyShield) -> None:
    first = shield.step([5.0, -5.0])[4]["applied_action"]
    np.testing.assert_array_equal(first, [1.0, -2.0])
    second = shield.step([-5.0, 5.0])[4]["applied_action"]
    np.testing.assert_allclose(second, [0.9, -1.75], rtol=1e-6)
    assert shield.unwrapped.received[-1].tolist() == second.tolist()


def test_narrower_bounds_than_the_space_are_honoured() -> None:
    shield = SafetyShield(Recorder(), low=-0.3, high=[0.3, 0.1])
    shield.reset()
    applied = shield.step([1.0, 1.0])[4]["applied_action"]
    assert applied[0] <= 0.3 and applied[1] <= 0.1
    assert shield.low[0] >= -0.3


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, np.inf], [-np.inf, np.nan]])
def test_a_non_finite_action_is_never_sent_and_aborts_the_episode(shield: SafetyShield, bad: list) -> None:
    last_obs = shield.step([0.0, 0.0])[0]
    obs, reward, terminated, truncated, info = shield.step(bad)
    assert obs is last_obs and reward == 0.0 and not terminated and truncated
    assert "non-finite action" in info["aborted"] and info["applied_action"] is None
    assert len(shield.unwrapped.received) == 1
    assert shield.log[-1][1] is None
    with pytest.raises(TestbedError, match=r"aborted .*call reset\(\)"):
        shield.step([0.0, 0.0])
    shield.reset()
    assert shield.log == []
    shield.step([0.0, 0.0])


def test_k_consecutive_clamps_abort_and_an_unclamped_step_resets_the_count() -> None:
    shield = SafetyShield(Recorder(), max_consecutive_clamps=3)
    shield.reset()
    for action in ([2.0, 0.0], [2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [2.0, 0.0]):
        assert not shield.step(action)[3]
    *_, truncated, info = shield.step([0.0, 9.0])
    assert truncated and info["aborted"] == "3 consecutive actions were clamped (limit 3)"
    assert len(shield.unwrapped.received) == 6
    shield.reset()
    assert not shield.step([2.0, 0.0])[3]


def test_reset_forgets_the_previous_action(shield: SafetyShield) -> None:
    shield.step([0.0, 0.0])
    shield.reset()
    np.testing.assert_array_equal(shield.step([1.0, 0.5])[4]["applied_action"], [1.0, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "space", "fragment"),
    [
        ({}, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32), "not finite; pass finite low= and high="),
        ({"low": 0.9, "high": -0.9}, None, "exceeds high"),
        ({"max_delta": 0.0}, None, "accepted: finite values > 0"),
        ({"max_delta": [0.1, 0.1, 0.1]}, None, "does not fit the action shape"),
        ({"max_consecutive_clamps": 0}, None, "None or an int >= 1"),
        ({}, gym.spaces.Discrete(3), "needs a Box action space"),
    ],
)
def test_bad_shield_settings_are_refused(kwargs: dict, space: gym.Space | None, fragment: str) -> None:
    env = Recorder()
    if space is not None:
        env.action_space = space
    with pytest.raises(TestbedError, match=fragment):
        SafetyShield(env, **kwargs)


def test_wrong_action_shapes_are_refused(shield: SafetyShield) -> None:
    with pytest.raises(TestbedError, match=r"shape \(3,\); accepted: \(2,\)"):
        shield.step([0.0, 0.0, 0.0])
    with pytest.raises(TestbedError, match="not numeric"):
        shield.step(["a", "b"])


finite_or_not = st.floats(width=64) | st.floats(-3.0, 3.0) | st.sampled_from([1e308, -1e308, 1e39, np.nan])


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(actions=arrays(np.float64, st.tuples(st.integers(250, 750), st.just(2)), elements=finite_or_not))
def test_every_applied_action_is_finite_in_bounds_and_rate_limited(actions: np.ndarray) -> None:
    env = Recorder(episode_length=200)
    shield = SafetyShield(env, max_delta=MAX_DELTA)
    shield.reset()
    episodes: list[list[np.ndarray]] = [[]]
    for action in actions:
        _, _, _, truncated, info = shield.step(action)
        if np.all(np.isfinite(action)):
            episodes[-1].append(info["applied_action"])
        else:
            assert info["applied_action"] is None and truncated and info["aborted"]
        if truncated:
            shield.reset()
            episodes.append([])
    applied = [np.array(episode, dtype=np.float64).reshape(-1, 2) for episode in episodes]
    everything = np.concatenate(applied)
    np.testing.assert_array_equal(everything, np.array(env.received).reshape(-1, 2))
    assert len(everything) == np.all(np.isfinite(actions), axis=1).sum()
    assert np.all(np.isfinite(everything)) and np.all(everything >= LOW) and np.all(everything <= HIGH)
    for episode in applied:
        assert np.all(np.abs(np.diff(episode, axis=0)) <= MAX_DELTA)


@pytest.fixture
def served_recorder() -> Iterator[TestbedServer]:
    server = TestbedServer(Recorder)
    server.start_in_thread()
    yield server
    server.stop()


def test_a_shielded_remote_env_never_sends_a_non_finite_action(served_recorder: TestbedServer) -> None:
    remote = RemoteEnv(served_recorder.address)
    try:
        shield = SafetyShield(remote, max_delta=MAX_DELTA)
        shield.reset(seed=0)
        shield.step([0.5, 0.5])
        *_, truncated, info = shield.step([np.nan, 0.0])
        assert truncated and info["aborted"]
        assert served_recorder.stats["executed"] == 1
        np.testing.assert_array_equal(served_recorder.env.unwrapped.received, [[0.5, 0.5]])
    finally:
        remote.close()
