"""Gymnasium registration of the built-in envs, so `gymnasium.make("sim2real/Driving-v0")` works."""

from __future__ import annotations

import gymnasium

ENV_IDS: tuple[str, ...] = ("sim2real/Driving-v0", "sim2real/Grasping-v0")

_ENTRY_POINTS = {
    "sim2real/Driving-v0": ("sim2real.bullet.driving:DrivingEnv", 1000),
    "sim2real/Grasping-v0": ("sim2real.bullet.grasping:GraspingEnv", 1000),
}


def register_envs() -> None:
    """Register every built-in env id once (idempotent)."""
    for env_id, (entry_point, _) in _ENTRY_POINTS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=True)
