"""Recorded target episodes: record them (locally or on the testbed), write and read rollout files, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from sim2real import catalog
from sim2real.checks import check_count, check_seed
from sim2real.episode import Policy, play
from sim2real.factory import make_env
from sim2real.records import JsonlWriter, read_jsonl
from sim2real.rundir import HEADER_KEY, claim_file
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid.params import SysIdError, check_known
from sim2real.target_env import check_target_or_testbed, open_target, target_run
from sim2real.wrappers import DomainWrapper
from sim2real.zoo import load_policy

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials

ACTION_TOLERANCE = 1e-6
"""How far past the action bounds a recorded action may lie (float rounding) before a rollout is refused."""


@dataclass(frozen=True)
class Trajectory:
    """One recorded episode: its reset seed, observations (T+1 × obs), the actions sent (T × act), known values.

    `known` holds the domain values the experimenter set for this episode (e.g. a payload's mass);
    its replay uses them, whatever the candidate values of a fit.
    """

    seed: int
    observations: np.ndarray
    actions: np.ndarray
    known: Mapping[str, float] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON line of a rollout file."""
        record = {"seed": self.seed, "observations": self.observations.tolist(), "actions": self.actions.tolist()}
        if self.known:
            record["known"] = dict(self.known)
        return record


def recorded_steps(trajectories: Sequence[Trajectory]) -> int:
    """Control steps in the recorded episodes: what recording them cost on the target."""
    return sum(len(t.actions) for t in trajectories)


def record_episode(policy: Policy, env: gym.Env, seed: int, deterministic: bool = True,
                   known: Mapping[str, float] | None = None) -> Trajectory:
    """Run one episode from ``reset(seed)`` and keep what a target without reward gives: observations, actions.

    `known` is written with the episode: the domain values set on the target while it ran.
    """
    steps = list(play(policy, env, seed, deterministic))
    observations = [np.asarray(step.observation, dtype=float) for step in steps]
    actions = [np.asarray(step.action, dtype=float) for step in steps[1:]]
    return Trajectory(seed, np.array(observations), np.array(actions), dict(known or {}))


def record(policy: Policy, env: gym.Env, episodes: int, path: str | Path, seed: int = 0,
           deterministic: bool = True, known: Mapping[str, float] | None = None) -> list[Trajectory]:
    """Run `episodes` episodes (seeds seed+i) and append each to the rollout file at `path` as it ends.

    `known` (the domain values set on the target for these episodes) is written with each episode.
    """
    trajectories = []
    with JsonlWriter(Path(path)) as writer:
        for index in range(episodes):
            trajectory = record_episode(policy, env, seed + index, deterministic, known)
            writer.write(trajectory.to_record())
            writer.fsync()
            trajectories.append(trajectory)
    return trajectories


def record_policy(policy: str | Path, task: str | Path | TaskSpec, path: str | Path, *, target: str = SOURCE,
                  episodes: int = 20, seed: int = 0, testbed: str | None = None,
                  known: Mapping[str, Any] | None = None, credentials: Credentials | None = None,
                  force: bool = False) -> list[Trajectory]:
    """Record a zoo name / bundle / zip on a target of the task, or on the testbed at `testbed` (shielded).

    The file's first line records the run; a rerun of the same recording into it records only
    the missing episodes, another is refused unless `force`, which replaces the file.

    `known` are domain values changed on purpose for these episodes (e.g. ``{"cargo_mass": 2.0}``,
    a payload of known mass). On a local target they are applied over the target's values; on the
    testbed the experimenter makes the change on the robot, and sim2real only writes it down. Either
    way each episode carries them, so identification replays it with them. `credentials`: the
    testbed's key and TLS check.
    """
    path = Path(path)
    check_count("episodes", episodes)
    check_seed(seed)
    spec = catalog.load(task)
    spec.target(target)
    known = check_known(spec, known or {}, where="known values")
    check_target_or_testbed(target, testbed, "recording")
    run = target_run("record", policy, spec, target, testbed, seed, known=known)
    have = load_trajectories(path, spec) if claim_file(path, run, force=force) and _holds_episodes(path) else []
    if len(have) >= episodes:
        return have[:episodes]
    if testbed is not None:
        model = load_policy(policy)
        env = open_target(spec, target, testbed, model, credentials)
    else:
        env = make_env(spec, target)
        domain = find_wrapper(env, DomainWrapper)
        domain.values = {**domain.values, **known}
        model = load_policy(policy, env)
    try:
        return have + record(model, env, episodes - len(have), path, seed=seed + len(have), known=known)
    finally:
        env.close()


def _holds_episodes(path: Path) -> bool:
    """Whether a rollout file holds at least one line after its run header."""
    return len(read_jsonl(path)) > 1


def load_trajectories(path: str | Path, spec: TaskSpec) -> list[Trajectory]:
    """Read a rollout file and check every episode against the task's observation and action sizes."""
    path = Path(path)
    if not path.is_file():
        raise SysIdError(f"rollout file {path} does not exist")
    env = make_env(spec, SOURCE, reality_gap=False)
    obs_size, act_size = _size(env.observation_space), _size(env.action_space)
    action_space = env.action_space
    env.close()
    trajectories = []
    for line, rec in enumerate(read_jsonl(path), start=1):
        where = f"{path}, line {line}"
        if line == 1 and isinstance(rec, dict) and HEADER_KEY in rec:
            continue
        if not isinstance(rec, dict) or not {"seed", "observations", "actions"} <= set(rec):
            raise SysIdError(f"{where}: an episode needs the keys seed, observations, actions")
        try:
            observations = np.asarray(rec["observations"], dtype=float)
            actions = np.asarray(rec["actions"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise SysIdError(f"{where}: observations and actions must be lists of numbers ({exc})") from exc
        if observations.ndim != 2 or observations.shape[1] != obs_size:
            raise SysIdError(f"{where}: observations have shape {observations.shape}, the task "
                             f"{spec.name} needs (steps + 1, {obs_size})")
        if actions.ndim != 2 or actions.shape[1] != act_size:
            raise SysIdError(f"{where}: actions have shape {actions.shape}, the task {spec.name} needs "
                             f"(steps, {act_size})")
        if len(observations) != len(actions) + 1 or len(actions) == 0:
            raise SysIdError(f"{where}: {len(observations)} observations for {len(actions)} actions; "
                             f"expected one more observation than actions, and at least one action")
        _check_values(observations, actions, action_space, where)
        known = check_known(spec, rec.get("known", {}), where)
        trajectories.append(Trajectory(int(rec["seed"]), observations, actions, known))
    if not trajectories:
        raise SysIdError(f"rollout file {path} holds no episode")
    return trajectories


def _check_values(observations: np.ndarray, actions: np.ndarray, action_space: gym.Space, where: str) -> None:
    """Refuse non-finite numbers and actions outside the task's action space (what no policy could have sent)."""
    for name, values in (("observations", observations), ("actions", actions)):
        if not np.isfinite(values).all():
            step, index = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
            raise SysIdError(f"{where}: {name} entry {index} at step {step} is {values[step, index]}; a rollout "
                             f"holds finite numbers only")
    if isinstance(action_space, gym.spaces.Box):
        low, high = action_space.low.ravel(), action_space.high.ravel()
        outside = (actions < low - ACTION_TOLERANCE) | (actions > high + ACTION_TOLERANCE)
        if outside.any():
            step, index = (int(i) for i in np.argwhere(outside)[0])
            raise SysIdError(f"{where}: action {index} at step {step} is {actions[step, index]:g}, outside the "
                             f"task's action space [{low[index]:g}, {high[index]:g}]")


def _size(space: gym.Space) -> int:
    return int(np.prod(space.shape))


def find_wrapper(env: gym.Env, kind: type) -> Any:
    """The wrapper of type `kind` in `env`'s stack of wrappers (or the env itself), or an error."""
    while not isinstance(env, kind):
        if not isinstance(env, gym.Wrapper):
            raise SysIdError(f"the task's env has no {kind.__name__}")
        env = env.env
    return env
