"""Recorded episodes replayed in simulation under candidate domain values: how far they drift from the recording."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real import defaults
from sim2real.episode import Policy, RecordedActions, play
from sim2real.factory import make_env
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid.trajectories import Trajectory, find_wrapper
from sim2real.wrappers import ActionDelay, DomainWrapper

DEFAULT_HORIZON = defaults.SYSID_HORIZON


class Replay:
    """Replays recorded episodes in the task's simulation under candidate domain values.

    Open-loop (no `policy`): the recorded actions are applied in order. Closed-loop (a `policy`,
    the one that recorded the episodes): it acts, deterministically, on the simulated
    observations, as it did on the target. Parameters a fit leaves alone take the `base`
    target's values.
    """

    def __init__(self, spec: TaskSpec, trajectories: Sequence[Trajectory], horizon: int = DEFAULT_HORIZON,
                 policy: Policy | None = None, base: str = SOURCE) -> None:
        self.spec, self.trajectories, self.horizon, self.policy = spec, list(trajectories), horizon, policy
        self.base = spec.domain(base)
        self.env = make_env(spec, SOURCE, reality_gap=False)
        self.domain = find_wrapper(self.env, DomainWrapper)

    def simulate(self, values: Mapping[str, Any], trajectory: Trajectory, delay: int) -> np.ndarray:
        """The simulated observations of one episode under `values`, actions applied `delay` steps late."""
        self.domain.values = {**self.base, **values, **trajectory.known}
        env: gym.Env = ActionDelay(self.env, delay) if delay else self.env
        player = RecordedActions(trajectory.actions) if self.policy is None else self.policy
        steps = play(player, env, trajectory.seed, limit=min(self.horizon, len(trajectory.actions)))
        return np.array([np.asarray(step.observation, dtype=float) for step in steps])

    def discrepancy(self, values: Mapping[str, Any], delay: int) -> float:
        """Mean squared observation difference per compared step, over every episode.

        A simulated episode that ends before the recorded one (the simulated car left the road)
        is compared over the recording's steps all the same, holding its last observation: a
        candidate must not score better by ending sooner, and the score must not jump when a
        tiny change of the values moves that end by a step.
        """
        total, count = 0.0, 0
        for trajectory in self.trajectories:
            simulated = self.simulate(values, trajectory, delay)
            recorded = trajectory.observations[: self.horizon + 1]
            held = np.repeat(simulated[-1:], len(recorded) - len(simulated), axis=0)
            total += float(np.sum((np.vstack([simulated, held])[1:] - recorded[1:]) ** 2))
            count += recorded[1:].size
        return total / max(count, 1)

    def close(self) -> None:
        """Close the simulation."""
        self.env.close()
