"""Real-time pacing for a stand-in: a simulated env that steps no faster than a robot's control loop.

A robot executes one command per control period whatever the client does; a simulator answers as
fast as it computes. ``Realtime`` makes the stand-in behave like the robot, so measurements taken
against it (robot minutes, the step rate a client keeps) mean what they would on hardware: each
step starts one control period after the previous one started, or at once when the client is late
(the robot then stood still for the difference). Resets are not paced: a robot's reset takes its
own time, which the stand-in cannot know.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym

from sim2real.testbed.protocol import TestbedError


def control_period(env: gym.Env) -> float:
    """Seconds per step of `env`: its ``dt`` (the built-in envs' physics per action), else 1 / ``render_fps``."""
    dt = getattr(env.unwrapped, "dt", None)
    if dt is None:
        fps = (env.metadata or {}).get("render_fps")
        dt = 1.0 / fps if fps else None
    if not (isinstance(dt, (int, float)) and 0 < dt < float("inf")):
        raise TestbedError(f"{env.unwrapped} declares no control period (no `dt` attribute, no metadata "
                           f"render_fps); give the period in seconds")
    return float(dt)


class Realtime(gym.Wrapper):
    """Step at most once per control ``period`` seconds (default: the env's own, see :func:`control_period`)."""

    def __init__(self, env: gym.Env, period: float | None = None) -> None:
        super().__init__(env)
        period = control_period(env) if period is None else period
        if not (isinstance(period, (int, float)) and 0 < period < float("inf")):
            raise TestbedError(f"control period {period!r}; accepted: a finite number of seconds > 0")
        self.period = float(period)
        self._next = 0.0

    @property
    def control_hz(self) -> float:
        """Steps per second of the control loop."""
        return 1.0 / self.period

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Wait for the next control tick, then step."""
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next = time.monotonic() + self.period
        return self.env.step(action)
