"""The one episode loop: a policy acts on an env from ``reset(seed)`` until the episode ends or a step limit.

Evaluation, recording, system identification's replays and GIF rendering all step an env through
:func:`play`. It yields the reset first (no action), then one :class:`Step` per ``env.step``, so
each caller keeps what it needs (returns, observations, actions, frames) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class Policy(Protocol):
    """Anything with SB3's `predict` (an SB3 model, or a user's own controller)."""

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Step:
    """The env after the reset (`action` None) or after one action: what it observed, paid and said."""

    observation: Any
    action: Any = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> bool:
        """Whether the episode ended here."""
        return self.terminated or self.truncated


def play(policy: Policy, env: gym.Env, seed: int, deterministic: bool = True, limit: int | None = None
         ) -> Iterator[Step]:
    """Reset `env` with `seed`, then let `policy` act until the episode ends or `limit` actions were taken."""
    observation, info = env.reset(seed=seed)
    step = Step(observation, info=info)
    yield step
    taken = 0
    while not step.last and (limit is None or taken < limit):
        action, _ = policy.predict(step.observation, deterministic=deterministic)
        observation, reward, terminated, truncated, info = env.step(action)
        step = Step(observation, action, float(reward), terminated, truncated, info)
        taken += 1
        yield step


class RecordedActions:
    """A policy that replays recorded actions in order (as float32), whatever it observes: an open-loop replay."""

    def __init__(self, actions: Sequence[np.ndarray]) -> None:
        self.actions, self.next = actions, 0

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, None]:
        """The next recorded action."""
        action = np.asarray(self.actions[self.next]).astype(np.float32)
        self.next += 1
        return action, None
