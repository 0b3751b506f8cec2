"""Step a group of envs together with SB3's auto-reset rules; what each worker process of `WorkerVecEnv` runs.

This module imports neither torch nor stable-baselines3, so a worker that runs it starts in a
fraction of a second. An env built by one of its factories is seeded the way SB3's
``make_vec_env`` seeds it, so the same seed gives the same episodes as a ``DummyVecEnv``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics


@dataclass(frozen=True)
class SeededEnvFactory:
    """Build one env with `make`, seed its action space, record episode statistics (SB3's ``info["episode"]``)."""

    make: Callable[[], gym.Env]
    seed: int | None

    def __call__(self) -> gym.Env:
        env = self.make()
        if self.seed is not None:
            env.action_space.seed(self.seed)
        return RecordEpisodeStatistics(env)


class EnvGroup:
    """Several envs stepped as one: a finished episode's last observation goes to ``info["terminal_observation"]``."""

    def __init__(self, factories: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [make() for make in factories]

    def step(self, actions: np.ndarray) -> tuple[list[Any], np.ndarray, np.ndarray, list[dict], list[dict]]:
        """One step of every env; an env whose episode ended is reset at once (its reset info returned)."""
        observations, rewards, dones, infos, reset_infos = [], [], [], [], []
        for env, action in zip(self.envs, actions, strict=True):
            observation, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            reset_info: dict = {}
            if done:
                info["terminal_observation"] = observation
                observation, reset_info = env.reset()
            observations.append(observation)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
            reset_infos.append(reset_info)
        return observations, np.array(rewards, dtype=np.float32), np.array(dones), infos, reset_infos

    def reset(self, seeds: Sequence[int | None], options: Sequence[dict | None]) -> tuple[list[Any], list[dict]]:
        """Reset every env with its own seed and options."""
        observations, infos = [], []
        for env, seed, option in zip(self.envs, seeds, options, strict=True):
            observation, info = env.reset(seed=seed, **({"options": option} if option else {}))
            observations.append(observation)
            infos.append(info)
        return observations, infos

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


def is_wrapped(env: gym.Env, wrapper_class: type) -> bool:
    """Whether `wrapper_class` is among the wrappers around `env`."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, wrapper_class):
            return True
        env = env.env
    return False


def serve(remote: Connection, parent_remote: Connection, pickled_factories: bytes) -> None:
    """Worker process loop: build the group, then answer (command, data) messages until "close".

    An exception inside an env is sent back as ("error", traceback text) so the parent can raise
    it, not left to surface as a broken pipe.
    """
    parent_remote.close()
    group = None
    try:
        group = EnvGroup(cloudpickle.loads(pickled_factories))
        remote.send(("ok", (group.envs[0].observation_space, group.envs[0].action_space)))
        while True:
            command, data = remote.recv()
            if command == "close":
                break
            remote.send(("ok", answer(group, command, data)))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception:  # any env failure goes back to the parent, which raises it
        remote.send(("error", traceback.format_exc()))
    finally:
        if group is not None:
            group.close()
        remote.close()


def answer(group: EnvGroup, command: str, data: Any) -> Any:
    """What the group replies to one command from `WorkerVecEnv` (its own group's too)."""
    if command == "step":
        return group.step(data)
    if command == "reset":
        return group.reset(*data)
    slots, payload = data
    envs = [group.envs[slot] for slot in slots]
    if command == "get_attr":
        return [env.get_wrapper_attr(payload) for env in envs]
    if command == "has_attr":
        return [_has_attr(env, payload) for env in envs]
    if command == "set_attr":
        name, value = payload
        return [setattr(env, name, value) for env in envs]
    if command == "env_method":
        name, args, kwargs = payload
        return [env.get_wrapper_attr(name)(*args, **kwargs) for env in envs]
    if command == "is_wrapped":
        return [is_wrapped(env, payload) for env in envs]
    if command == "render":
        return [env.render() for env in envs]
    raise ValueError(f"unknown command {command!r} for an env worker")


def _has_attr(env: gym.Env, name: str) -> bool:
    try:
        env.get_wrapper_attr(name)
    except AttributeError:
        return False
    return True
