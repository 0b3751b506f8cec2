"""SafetyShield: the last check between a policy and a robot.

A non-finite action is never sent: the episode ends (truncated, ``info["aborted"]``, reward 0, the
last observation). Every other action is clipped into [low, high] and to at most ``max_delta`` away
from the previously applied action (the first action after a reset is only clipped to the bounds).
The ``max_consecutive_clamps``-th clamped action in a row is still applied (it is safe), then the
episode ends the same way. Requested and applied actions are in every step's info and in ``log``
(the current episode's). Applied actions are cast to the action dtype without rounding past a bound.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.testbed.protocol import TestbedError


def _bound(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    except (TypeError, ValueError) as exc:
        raise TestbedError(f"{name}={value!r} does not fit the action shape {shape}: {exc}") from None


def _cast_within(values: np.ndarray, low: np.ndarray, high: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float64 values in [low, high] to dtype without rounding outside [low, high]."""
    cast = values.astype(dtype)
    cast = np.where(cast > high, np.nextafter(cast, -np.inf), cast)
    return np.where(cast < low, np.nextafter(cast, np.inf), cast).astype(dtype)


class SafetyShield(gym.Wrapper):
    """Clip, rate-limit and log actions; abort the episode on a non-finite action or K clamps in a row."""

    def __init__(
        self,
        env: gym.Env,
        max_delta: float | np.ndarray | None = None,
        low: float | np.ndarray | None = None,
        high: float | np.ndarray | None = None,
        max_consecutive_clamps: int | None = None,
    ) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise TestbedError(f"SafetyShield needs a Box action space; got {space!r}")
        if not np.issubdtype(space.dtype, np.floating):
            raise TestbedError(f"SafetyShield needs a float action space; got dtype {space.dtype}")
        shape, self._dtype = space.shape, space.dtype
        lows = np.maximum(_bound(space.low if low is None else low, "low", shape), space.low)
        highs = np.minimum(_bound(space.high if high is None else high, "high", shape), space.high)
        if not (np.all(np.isfinite(lows)) and np.all(np.isfinite(highs))):
            raise TestbedError(
                f"action bounds low={lows.tolist()} high={highs.tolist()} are not finite; "
                "pass finite low= and high="
            )
        finite = np.finfo(self._dtype).max
        lows, highs = np.clip(lows, -finite, finite), np.clip(highs, -finite, finite)
        self.low = _cast_within(lows, lows, np.full(shape, np.inf), self._dtype).astype(np.float64)
        self.high = _cast_within(highs, np.full(shape, -np.inf), highs, self._dtype).astype(np.float64)
        if np.any(self.low > self.high):
            raise TestbedError(
                f"low={lows.tolist()} exceeds high={highs.tolist()} (within {space!r}); accepted: low <= high"
            )
        self.max_delta = None if max_delta is None else _bound(max_delta, "max_delta", shape)
        if self.max_delta is not None and not np.all(np.isfinite(self.max_delta) & (self.max_delta > 0)):
            raise TestbedError(f"max_delta={max_delta!r}; accepted: finite values > 0")
        if max_consecutive_clamps is not None and (
            isinstance(max_consecutive_clamps, bool)
            or not isinstance(max_consecutive_clamps, int)
            or max_consecutive_clamps < 1
        ):
            raise TestbedError(
                f"max_consecutive_clamps={max_consecutive_clamps!r}; accepted: None or an int >= 1"
            )
        self.max_consecutive_clamps = max_consecutive_clamps
        self.log: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._previous: np.ndarray | None = None
        self._clamps = 0
        self._aborted: str | None = None
        self._last_obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the env and the shield's state (previous action, clamp count, abort, log)."""
        self.log = []
        self._previous, self._clamps, self._aborted = None, 0, None
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply the shielded action; a non-finite request ends the episode without reaching the env."""
        if self._aborted is not None:
            raise TestbedError(f"the episode was aborted ({self._aborted}); call reset()")
        requested = self._requested(action)
        if not np.all(np.isfinite(requested)):
            reason = f"non-finite action requested: {requested.tolist()}; nothing was sent"
            self._aborted = reason
            self.log.append((requested, None))
            info = {"aborted": reason, "requested_action": requested, "applied_action": None}
            return self._last_obs, 0.0, False, True, info
        low, high = self.low, self.high
        if self.max_delta is not None and self._previous is not None:
            low = np.maximum(low, self._previous - self.max_delta)
            high = np.minimum(high, self._previous + self.max_delta)
        bounded = np.clip(requested, low, high)
        self._clamps = self._clamps + 1 if not np.array_equal(bounded, requested) else 0
        applied = _cast_within(bounded, low, high, self._dtype)
        obs, reward, terminated, truncated, info = self.env.step(applied)
        self._previous = applied.astype(np.float64)
        self._last_obs = obs
        self.log.append((requested, applied))
        info = {**info, "requested_action": requested, "applied_action": applied.copy()}
        limit = self.max_consecutive_clamps
        if limit is not None and self._clamps >= limit:
            self._aborted = f"{self._clamps} consecutive actions were clamped (limit {limit})"
            info["aborted"] = self._aborted
            truncated = True
        return obs, reward, terminated, truncated, info

    def _requested(self, action: Any) -> np.ndarray:
        try:
            requested = np.array(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TestbedError(f"action {action!r:.100} is not numeric: {exc}") from None
        if requested.shape != self.low.shape:
            raise TestbedError(f"action has shape {requested.shape}; accepted: {self.low.shape}")
        return requested
