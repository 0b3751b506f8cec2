"""Driving: the pybullet racecar races along a random track or parks in a bay; leaving the road or rolling over ends it.

Speed, grip and load transfer decide success: the corners are tighter than the car can take at top
speed, so a policy must brake for them, and a heavier, top-loaded, slower-steering vehicle (the
`truck` target) rolls over where the car did not. The `park` goal keeps the road and the car and
changes the task: stop in a bay down the road, lined up with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from sim2real.bullet.base import BulletEnv
from sim2real.bullet.track import SPACING, Track, TrackShape
from sim2real.domain import DomainParam, Value

WHEELS = (2, 3, 5, 7)
STEERING = (4, 6)
WHEEL_RADIUS = 0.05  # metres
LOOKAHEAD = tuple(range(8, 49, 8))  # centreline points 0.4, 0.8, ..., 2.4 m ahead
OBS_SIZE = 2 * len(LOOKAHEAD) + 12
OBSERVATION_LABELS = (
    *(f"centreline {k * 5} cm ahead, x" for k in LOOKAHEAD), *(f"centreline {k * 5} cm ahead, y" for k in LOOKAHEAD),
    "lateral offset", "sin heading error", "cos heading error", "speed", "lateral speed", "yaw rate", "roll",
    "roll rate", "steering", "throttle", "time left", "progress",
)
"""What each observation entry is, for figures and people (same order as `_observe`)."""
GOALS = ("race", "park")

DOMAIN_PARAMS = {
    p.name: p
    for p in (
        DomainParam("mass_scale", 1.0, 0.3, 5.0, unit="×", description="every link's mass and inertia"),
        DomainParam("tyre_friction", 1.0, 0.05, 2.0, description="lateral friction of the tyres (road 1.0)"),
        DomainParam("motor_force_scale", 1.0, 0.1, 3.0, unit="×", description="maximum wheel torque"),
        DomainParam("max_speed_scale", 1.0, 0.2, 2.0, unit="×", description="top wheel speed"),
        DomainParam("steer_limit_scale", 1.0, 0.2, 1.5, unit="×", description="maximum steering angle"),
        DomainParam("steer_rate_scale", 1.0, 0.1, 2.0, unit="×", description="steering slew rate"),
        DomainParam("steer_bias", 0.0, -0.2, 0.2, unit="rad", description="steering misalignment"),
        DomainParam("cargo_mass", 0.0, 0.0, 20.0, unit="kg", description="load fixed above the chassis"),
        DomainParam("cargo_height", 0.3, 0.1, 0.6, unit="m", description="height of the load above the chassis"),
    )
}


class DrivingEnv(BulletEnv):
    """Race a racecar along a random track of straights and arcs within a corridor, against the clock.

    Action (2): steering target and throttle (wheel target speed), both in [-1, 1].
    Observation (24, scaled to about [-1, 1]): six centreline points 0.4–2.4 m ahead in the car's
    frame, lateral and heading error, forward/lateral speed, yaw rate, roll and roll rate,
    steering angle, previous throttle, time left, distance covered as a fraction of `track_length`.
    Reward (``goal="race"``): 2 per metre of progress; −5 and the episode ends on leaving the
    corridor or rolling past `max_roll`; +5 and it ends on covering `track_length`
    (``info["is_success"]``).
    With ``goal="park"`` a bay (`bay_length` × `bay_width` metres, centred on the road) lies
    `track_length` down the road, where the road as observed ends (the centreline points ahead
    stop at the bay's centre). The reward is the change of a potential, −(2·distance to the bay's
    centre along the road + 2·lateral offset + heading error), so an overshoot costs what it
    gained; the episode succeeds and ends (+5) once the car stands in the bay (speed below
    `park_speed` m/s, heading within `park_heading` rad of the road's). The observation and
    action are the racing ones, so a racing policy runs unchanged.
    """

    observation_labels: ClassVar[tuple[str, ...]] = OBSERVATION_LABELS
    DOMAIN_PARAMS: ClassVar[Mapping[str, DomainParam]] = DOMAIN_PARAMS

    def __init__(
        self,
        render_mode: str | None = None,
        track_length: float = 12.0,
        time_limit: float = 9.0,
        half_width: float = 0.35,
        max_roll: float = 0.45,
        max_steer: float = 0.5,
        steer_rate: float = 4.0,
        max_speed: float = 5.0,
        max_torque: float = 1.0,
        substeps: int = 4,
        substep_dt: float = 0.01,
        track_shape: TrackShape | None = None,
        goal: str = "race",
        bay_length: float = 0.4,
        bay_width: float = 0.3,
        park_speed: float = 0.15,
        park_heading: float = 0.2,
        **domain: Value,
    ) -> None:
        if goal not in GOALS:
            raise ValueError(f"goal {goal!r} is not a driving goal (allowed: {', '.join(GOALS)})")
        super().__init__(render_mode, domain)
        self.goal, self.bay_length, self.bay_width = goal, bay_length, bay_width
        self.park_speed, self.park_heading = park_speed, park_heading
        self.track_length, self.half_width, self.max_roll = track_length, half_width, max_roll
        self.max_steer, self.steer_rate, self.max_speed, self.max_torque = max_steer, steer_rate, max_speed, max_torque
        self.substeps, self.substep_dt = substeps, substep_dt
        self.dt = substeps * substep_dt
        self.max_steps = round(time_limit / self.dt)
        self.track_shape = track_shape or TrackShape()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(OBS_SIZE,), dtype=np.float32)
        self._markers: list[int] = []
        self.car = self.plane = -1
        self._cargo: tuple[int, int] | None = None

    def _build(self) -> None:
        c = self.client
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(self.substep_dt)
        self.plane = c.loadURDF("plane.urdf")
        self.car = c.loadURDF("racecar/racecar.urdf", [0, 0, 0.05])
        self._nominal_dynamics = {
            link: c.getDynamicsInfo(self.car, link)[:3] for link in range(-1, c.getNumJoints(self.car))
        }
        for joint in range(c.getNumJoints(self.car)):
            c.setJointMotorControl2(self.car, joint, c.VELOCITY_CONTROL, targetVelocity=0, force=0)

    def _apply_domain(self, values: Mapping[str, Value], changed: set[str]) -> None:
        c = self.client
        scale = float(values["mass_scale"])
        for link, (mass, _, inertia) in self._nominal_dynamics.items():
            c.changeDynamics(self.car, link, mass=mass * scale, localInertiaDiagonal=[i * scale for i in inertia])
        for wheel in WHEELS:
            c.changeDynamics(self.car, wheel, lateralFriction=float(values["tyre_friction"]))
        if changed & {"cargo_mass", "cargo_height"}:
            self._place_cargo(float(values["cargo_mass"]), float(values["cargo_height"]))
        self._steer_limit = self.max_steer * float(values["steer_limit_scale"])
        self._steer_step = self.steer_rate * float(values["steer_rate_scale"]) * self.dt
        self._wheel_speed = self.max_speed * float(values["max_speed_scale"]) / WHEEL_RADIUS
        self._torque = self.max_torque * float(values["motor_force_scale"])
        self._steer_bias = float(values["steer_bias"])

    def _place_cargo(self, mass: float, height: float) -> None:
        c = self.client
        if self._cargo is not None:
            c.removeConstraint(self._cargo[1])
            c.removeBody(self._cargo[0])
            self._cargo = None
        if mass <= 0:
            return
        half = [0.12, 0.08, 0.04]
        base = c.getLinkState(self.car, 1)[0]
        body = c.createMultiBody(
            baseMass=mass,
            baseCollisionShapeIndex=c.createCollisionShape(c.GEOM_BOX, halfExtents=half),
            baseVisualShapeIndex=c.createVisualShape(c.GEOM_BOX, halfExtents=half, rgbaColor=[0.8, 0.5, 0.2, 1]),
            basePosition=[base[0], base[1], base[2] + height],
        )
        constraint = c.createConstraint(
            self.car, 1, body, -1, c.JOINT_FIXED, [0, 0, 0], [0, 0, height], [0, 0, 0]
        )
        c.changeConstraint(constraint, maxForce=1e5)
        c.setCollisionFilterPair(self.car, body, -1, -1, 0)
        for link in range(c.getNumJoints(self.car)):
            c.setCollisionFilterPair(self.car, body, link, -1, 0)
        self._cargo = (body, constraint)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._clear_markers()
        self._reset_physics()
        self.track = Track.random(self.np_random, self.track_length + 3.0, self.track_shape)
        self._road_end = round(self.track_length / SPACING) if self.goal == "park" else len(self.track.points) - 1
        self._index, self._steps, self._steer, self._throttle = 0, 0, 0.0, 0.0
        if self.render_mode == "rgb_array":
            self._draw_track()
        obs = self._observe()
        self._potential = self._parking_potential(0.0)
        return obs, {"domain": self.domain}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        c = self.client
        steer_target = min(max(float(action[0]), -1.0), 1.0) * self._steer_limit
        self._steer += min(max(steer_target - self._steer, -self._steer_step), self._steer_step)
        self._throttle = min(max(float(action[1]), -1.0), 1.0)
        wheel_speed = self._throttle * self._wheel_speed
        c.setJointMotorControlArray(self.car, WHEELS, c.VELOCITY_CONTROL, targetVelocities=[wheel_speed] * 4,
                                    forces=[self._torque] * 4)
        angle = self._steer + self._steer_bias
        c.setJointMotorControlArray(self.car, STEERING, c.POSITION_CONTROL, targetPositions=[angle, angle],
                                    forces=[10.0, 10.0])
        for _ in range(self.substeps):
            c.stepSimulation()
        self._steps += 1
        previous = self._index
        obs = self._observe()
        distance = self._index * SPACING
        off_track = abs(self._lateral) > self.half_width
        rolled = abs(self._roll) > self.max_roll
        if self.goal == "race":
            reward = 2.0 * (self._index - previous) * SPACING
            success = distance >= self.track_length
        else:
            potential = self._parking_potential(distance)
            reward = potential - self._potential
            self._potential = potential
            success = self._parked(distance)
        terminated = off_track or rolled or success
        if success:
            reward += 5.0
        elif off_track or rolled:
            reward -= 5.0
        truncated = not terminated and self._steps >= self.max_steps
        info = {"is_success": success, "distance": distance, "off_track": off_track, "rolled_over": rolled}
        return obs, reward, terminated, truncated, info

    def _parking_potential(self, distance: float) -> float:
        """How far the car is from standing in the bay's centre, lined up (negated: higher is better)."""
        return -(2.0 * abs(distance - self.track_length) + 2.0 * abs(self._lateral) + abs(self._heading_error))

    def _parked(self, distance: float) -> bool:
        """Whether the car stands in the bay, lined up with the road."""
        return (
            abs(distance - self.track_length) <= self.bay_length / 2
            and abs(self._lateral) <= self.bay_width / 2
            and abs(self._speed) < self.park_speed
            and abs(self._heading_error) < self.park_heading
        )

    def _observe(self) -> np.ndarray:
        c = self.client
        (x, y, _), (qx, qy, qz, qw) = c.getBasePositionAndOrientation(self.car)
        (vx, vy, _), (wx, wy, wz) = c.getBaseVelocity(self.car)
        yaw = math.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        self._roll = math.atan2(2 * (qw * qx + qy * qz), 1 - 2 * (qx * qx + qy * qy))
        self._index, self._lateral = self.track.locate(x, y, self._index)
        cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
        ahead_x, ahead_y = [], []
        for offset in LOOKAHEAD:
            px, py = self.track.point(min(self._index + offset, self._road_end))
            ahead_x.append((cos_yaw * (px - x) + sin_yaw * (py - y)) / 2.5)
            ahead_y.append((cos_yaw * (py - y) - sin_yaw * (px - x)) / 2.5)
        heading_error = yaw - self.track.heading(self._index)
        self._heading_error = math.atan2(math.sin(heading_error), math.cos(heading_error))
        self._speed = cos_yaw * vx + sin_yaw * vy
        values = (
            *ahead_x, *ahead_y, self._lateral / self.half_width, math.sin(heading_error), math.cos(heading_error),
            self._speed / 5.0, (cos_yaw * vy - sin_yaw * vx) / 2.0, wz / 5.0,
            self._roll / self.max_roll, (cos_yaw * wx + sin_yaw * wy) / 5.0, self._steer / self.max_steer,
            self._throttle, 1.0 - self._steps / self.max_steps, self._index * SPACING / self.track_length,
        )
        return np.array([min(max(v, -5.0), 5.0) for v in values], dtype=np.float32)

    def _clear_markers(self) -> None:
        for marker in self._markers:
            self.client.removeBody(marker)
        self._markers = []

    def _draw_track(self) -> None:
        c = self.client
        normals = np.stack([-self.track.tangents[:, 1], self.track.tangents[:, 0]], axis=1)
        centre = self.track.points[::5]
        edges = np.vstack([centre + self.half_width * normals[::5], centre - self.half_width * normals[::5]])
        shape = c.createVisualShape(c.GEOM_BOX, halfExtents=[0.03, 0.03, 0.002], rgbaColor=[1, 1, 1, 1])
        positions = [[px, py, 0.002] for px, py in edges]
        bodies = c.createMultiBody(baseVisualShapeIndex=shape, batchPositions=positions)
        self._markers = list(bodies) if isinstance(bodies, list | tuple) else [bodies]
        if self.goal == "park":
            (bx, by), heading = self.track.point(self._road_end), self.track.heading(self._road_end)
            shape = c.createVisualShape(c.GEOM_BOX, halfExtents=[self.bay_length / 2, self.bay_width / 2, 0.001],
                                        rgbaColor=[1.0, 0.85, 0.1, 1])
            self._markers.append(c.createMultiBody(baseVisualShapeIndex=shape, basePosition=[bx, by, 0.001],
                                                   baseOrientation=c.getQuaternionFromEuler([0, 0, heading])))

    def _camera(self) -> tuple[list[float], list[float]]:
        (x, y, _), quat = self.client.getBasePositionAndOrientation(self.car)
        yaw = self.client.getEulerFromQuaternion(quat)[2]
        return [x - 1.2 * math.cos(yaw), y - 1.2 * math.sin(yaw), 0.9], [x + 0.8 * math.cos(yaw),
                                                                         y + 0.8 * math.sin(yaw), 0.0]
