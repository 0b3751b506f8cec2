"""Grasping: a Franka Panda picks an object off the floor with Cartesian moves, a wrist yaw and a parallel gripper.

The object's mass, size, aspect ratio, friction and shape and the gripper's force are domain
parameters: a heavier, slipperier part slides out of a grip that held the source object, and a
long parcel fits between the fingers only when the gripper is turned across its long side. The
`place` goal keeps the cell and changes the task: lift the object, then put it down on a marked spot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from sim2real.bullet.base import BulletEnv
from sim2real.domain import DomainParam, Value

ARM = tuple(range(7))
FINGERS = (9, 10)
GRASP_TARGET = 11
REST_POSE = (0.0, 0.2, 0.0, -2.2, 0.0, 2.4, 0.785)
MAX_YAW = math.pi / 2
MAX_LENGTH = 0.12  # metres: the long side of a stretched box, capped so that it stays liftable
WORKSPACE = np.array([0.5, 0.0, 0.0])
REACH_LOW, REACH_HIGH = np.array([0.3, -0.25, 0.0]), np.array([0.7, 0.25, 0.35])  # where the gripper may go
SHAPES = ("box", "cylinder", "sphere")
OBS_SIZE = 19
GOALS = ("pick", "place")

DOMAIN_PARAMS = {
    p.name: p
    for p in (
        DomainParam("object_mass", 0.1, 0.02, 1.0, unit="kg", description="mass of the object"),
        DomainParam("object_size", 0.04, 0.02, 0.07, unit="m", description="edge or diameter of the object"),
        DomainParam("object_aspect", 1.0, 1.0, 3.0, unit="×",
                    description="length/width of a box (1 = cube; long side capped at 12 cm)"),
        DomainParam("object_friction", 1.0, 0.1, 2.0, description="lateral friction of the object (fingers 1.0)"),
        DomainParam("gripper_force_scale", 1.0, 0.2, 3.0, unit="×", description="finger closing force"),
        DomainParam("object_shape", "box", choices=SHAPES, description="geometry of the object"),
        DomainParam("arm_gain_scale", 1.0, 0.3, 2.0, unit="×", description="arm position-servo gain"),
        DomainParam("mount_yaw", 0.0, -math.pi, math.pi, unit="rad",
                    description="yaw of the arm's mount in the camera's frame (how the arm is installed)"),
    )
}


def _pointing_down(yaw: float) -> tuple[float, float, float, float]:
    """The quaternion of a gripper pointing at the floor, turned by `yaw` about the vertical."""
    return (math.cos(yaw / 2), math.sin(yaw / 2), 0.0, 0.0)


OBSERVATION_LABELS = (
    "gripper x", "gripper y", "gripper z", "gripper vx", "gripper vy", "gripper vz", "finger opening",
    "goal − gripper x", "goal − gripper y", "goal − gripper z", "lift", "object vx", "object vy", "object vz",
    "finger contacts", "elongation · sin yaw", "elongation · cos yaw", "object yaw", "time left",
)
"""What each observation entry is, for figures and people (same order as `_observe`)."""


class GraspingEnv(BulletEnv):
    """Pick up an object with a Franka Panda: reach, turn the gripper, close it, lift the object 5 cm.

    Action (5): end-effector displacement (x, y, z; up to `max_move` metres per step), gripper yaw
    change (up to `max_turn` radians per step, the yaw held within ±π/2) and gripper command
    (−1 open … +1 closed).
    Observation (19, scaled to about [-1, 1]): gripper position and velocity, finger opening,
    the goal's position relative to the gripper (the object's), object height and velocity, finger contacts, the
    object's long axis relative to the gripper (sin, cos of 2× its relative yaw, weighted by the
    elongation of its top view as image moments give it: 0 for a cube, cylinder or ball), gripper
    yaw, time left.
    Reward: the change of a potential (reach + 0.5·finger contacts + 3·lift fraction) − 0.01 per
    step − `turn_cost`·|yaw command| (turn only when it pays); +5 and the episode ends when the
    object is 5 cm up (``info["is_success"]``). Objects spawn at |yaw| drawn from `spawn_yaw`.
    With ``goal="place"`` a spot is marked `place_distance` metres from the object in a random
    direction. Lifting the object 5 cm does not end the episode: while the object is carried (from
    that lift until it lies on the floor off the spot) the goal the observation shows is where the
    object should rest on the spot, and the potential is 9.5 + 4·nearness of the object to the
    spot + 2·nearness·(how far it is lowered) − 2 per lift height above 1.5× `lift_height` (carry
    it low); dropped off the spot, the object is the goal again and so is the picking potential.
    The episode succeeds and ends (+5) when the carried object rests on the floor within
    `place_tolerance` of the spot with the fingers off it.
    The domain parameter `mount_yaw` turns the arm's base about the vertical: its (x, y) moves are given in its own
    frame, the observations in the cell's (the camera's) frame, as in a cell whose arm is mounted
    another way than the one the policy learned on.
    """

    observation_labels: ClassVar[tuple[str, ...]] = OBSERVATION_LABELS
    DOMAIN_PARAMS: ClassVar[Mapping[str, DomainParam]] = DOMAIN_PARAMS
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 24}

    def __init__(
        self,
        render_mode: str | None = None,
        max_steps: int = 50,
        lift_height: float = 0.05,
        max_move: float = 0.02,
        max_turn: float = 0.25,
        finger_force: float = 20.0,
        spawn_range: float = 0.08,
        spawn_yaw: tuple[float, float] = (0.0, math.pi / 2),
        turn_cost: float = 0.01,
        start_height: tuple[float, float] = (0.15, 0.20),
        substeps: int = 4,
        substep_dt: float = 1 / 96,
        solver_iterations: int = 10,
        ik_iterations: int = 5,
        goal: str = "pick",
        place_distance: tuple[float, float] = (0.06, 0.10),
        place_tolerance: float = 0.04,
        **domain: Value,
    ) -> None:
        if goal not in GOALS:
            raise ValueError(f"goal {goal!r} is not a grasping goal (allowed: {', '.join(GOALS)})")
        super().__init__(render_mode, domain)
        self.goal, self.place_distance, self.place_tolerance = goal, tuple(place_distance), place_tolerance
        self.max_steps, self.lift_height, self.max_move = max_steps, lift_height, max_move
        self.max_turn, self.spawn_yaw, self.turn_cost = max_turn, tuple(spawn_yaw), turn_cost
        self.finger_force, self.spawn_range, self.start_height = finger_force, spawn_range, start_height
        self.substeps, self.substep_dt = substeps, substep_dt
        self.solver_iterations, self.ik_iterations = solver_iterations, ik_iterations
        self.dt = substeps * substep_dt
        self.action_space = spaces.Box(-1.0, 1.0, shape=(5,), dtype=np.float32)
        self.observation_space = spaces.Box(-5.0, 5.0, shape=(OBS_SIZE,), dtype=np.float32)
        self.robot = self.object = -1
        self._spot_marker = -1
        self._spot = np.zeros(2)
        self._carrying = False

    def _build(self) -> None:
        c = self.client
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(self.substep_dt)
        c.setPhysicsEngineParameter(numSolverIterations=self.solver_iterations)
        self.plane = c.loadURDF("plane.urdf")
        self.robot = c.loadURDF("franka_panda/panda.urdf", useFixedBase=True)
        for joint, angle in zip(ARM, REST_POSE, strict=True):
            c.resetJointState(self.robot, joint, angle)
        for link in range(-1, c.getNumJoints(self.robot)):
            c.setCollisionFilterPair(self.robot, self.plane, link, -1, 0)
        for finger in FINGERS:
            c.changeDynamics(self.robot, finger, lateralFriction=1.0, spinningFriction=0.001)

    def _apply_domain(self, values: Mapping[str, Value], changed: set[str]) -> None:
        if changed & {"object_shape", "object_size", "object_aspect"} or self.object < 0:
            self._make_object(str(values["object_shape"]), float(values["object_size"]),
                              float(values["object_aspect"]))
        self.client.changeDynamics(self.object, -1, mass=float(values["object_mass"]),
                                   lateralFriction=float(values["object_friction"]), spinningFriction=0.001,
                                   rollingFriction=0.0001)
        self._grip_force = self.finger_force * float(values["gripper_force_scale"])
        self._arm_gain = 0.3 * float(values["arm_gain_scale"])
        mount_yaw = float(values["mount_yaw"])
        self._mount = (math.cos(mount_yaw), math.sin(mount_yaw))

    def _make_object(self, shape: str, size: float, aspect: float) -> None:
        c = self.client
        if self.object >= 0:
            c.removeBody(self.object)
        half = size / 2
        length = min(size * aspect, MAX_LENGTH) if shape == "box" else size
        self._elongation = (length**2 - size**2) / (length**2 + size**2)
        if shape == "box":
            kwargs: dict[str, Any] = {"halfExtents": [half, length / 2, half]}
            self._rest_height = half
        elif shape == "cylinder":
            kwargs = {"radius": half, "height": size}
            self._rest_height = half
        else:
            kwargs = {"radius": half}
            self._rest_height = half
        geometry = {"box": c.GEOM_BOX, "cylinder": c.GEOM_CYLINDER, "sphere": c.GEOM_SPHERE}[shape]
        visual = dict(kwargs, length=kwargs["height"]) if shape == "cylinder" else kwargs
        visual.pop("height", None)
        self.object = c.createMultiBody(
            baseMass=0.1,
            baseCollisionShapeIndex=c.createCollisionShape(geometry, **kwargs),
            baseVisualShapeIndex=c.createVisualShape(geometry, rgbaColor=[0.9, 0.3, 0.2, 1], **visual),
            basePosition=[0.5, 0.0, self._rest_height],
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._spot_marker >= 0:
            self.client.removeBody(self._spot_marker)
            self._spot_marker = -1
        self._reset_physics()
        c, rng = self.client, self.np_random
        offset = rng.uniform(-self.spawn_range, self.spawn_range, size=2)
        yaw = rng.uniform(*self.spawn_yaw) * rng.choice((-1.0, 1.0))
        c.resetBasePositionAndOrientation(self.object, [0.5 + offset[0], offset[1], self._rest_height],
                                          c.getQuaternionFromEuler([0, 0, yaw]))
        start_offset = rng.uniform(-self.spawn_range, self.spawn_range, size=2)
        self._target = np.array([0.5 + offset[0] + start_offset[0], offset[1] + start_offset[1],
                                 rng.uniform(*self.start_height)])
        self._width, self._yaw, self._steps = 0.08, 0.0, 0
        for joint, angle in zip(ARM, self._solve_ik(self._target, self._yaw), strict=True):
            c.resetJointState(self.robot, joint, angle)
        for finger in FINGERS:
            c.resetJointState(self.robot, finger, 0.04)
        self._command_joints(self._solve_ik(self._target, self._yaw))
        self._carrying = False
        if self.goal == "place":
            self._mark_spot(np.array([0.5 + offset[0], offset[1]]))
        obs = self._observe()
        self._potential = self._phi()
        return obs, {"domain": self.domain}

    def _mark_spot(self, start: np.ndarray) -> None:
        """Draw the spot to place the object on: `place_distance` from it, inside the arm's reach."""
        rng = self.np_random
        angle, distance = rng.uniform(-math.pi, math.pi), rng.uniform(*self.place_distance)
        spot = start + distance * np.array([math.cos(angle), math.sin(angle)])
        self._spot = np.clip(spot, REACH_LOW[:2] + 0.05, REACH_HIGH[:2] - 0.05)
        if self.render_mode == "rgb_array":
            c = self.client
            shape = c.createVisualShape(c.GEOM_CYLINDER, radius=self.place_tolerance, length=0.002,
                                        rgbaColor=[0.1, 0.7, 0.2, 1])
            self._spot_marker = c.createMultiBody(baseVisualShapeIndex=shape, basePosition=[*self._spot, 0.001])

    def _solve_ik(self, position: np.ndarray, yaw: float) -> list[float]:
        """Arm joints that put the grasp target at `position`, pointing down and turned by `yaw`.

        The IK keeps the gripper's present yaw, so that it moves the arm only to reach; the last
        joint, whose axis runs through the grasp target, then adds the rest of the turn alone.
        """
        c = self.client
        present = c.getEulerFromQuaternion(c.getLinkState(self.robot, GRASP_TARGET)[5])[2]
        joints = list(c.calculateInverseKinematics(
            self.robot, GRASP_TARGET, position.tolist(), _pointing_down(present),
            maxNumIterations=self.ik_iterations, residualThreshold=1e-4,
        )[:7])
        joints[6] -= yaw - present
        return joints

    def _command_joints(self, arm: list[float]) -> None:
        c = self.client
        c.setJointMotorControlArray(self.robot, ARM, c.POSITION_CONTROL, targetPositions=arm,
                                    positionGains=[self._arm_gain] * 7, forces=[87.0] * 7)
        half = self._width / 2
        c.setJointMotorControlArray(self.robot, FINGERS, c.POSITION_CONTROL, targetPositions=[half, half],
                                    forces=[self._grip_force] * 2)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        dx, dy, dz = (min(max(float(a), -1.0), 1.0) * self.max_move for a in action[:3])
        cos, sin = self._mount
        move = (cos * dx - sin * dy, sin * dx + cos * dy, dz)
        self._target = np.clip(self._target + move, REACH_LOW, REACH_HIGH)
        turn_command = min(max(float(action[3]), -1.0), 1.0)
        turn = turn_command * self.max_turn
        self._yaw = min(max(self._yaw + turn, -MAX_YAW), MAX_YAW)
        self._width = 0.04 * (1.0 - min(max(float(action[4]), -1.0), 1.0))
        self._command_joints(self._solve_ik(self._target, self._yaw))
        for _ in range(self.substeps):
            self.client.stepSimulation()
        self._steps += 1
        obs = self._observe()
        potential = self._phi()
        reward = potential - self._potential - 0.01 - self.turn_cost * abs(turn_command)
        self._potential = potential
        success = self._lifted() if self.goal == "pick" else self._placed()
        if success:
            reward += 5.0
        truncated = not success and self._steps >= self.max_steps
        info = {"is_success": success, "lift": self._lift, "contacts": self._contacts}
        if self.goal == "place":
            info |= {"carrying": self._carrying, "spot_distance": self._spot_distance}
        return obs, reward, success, truncated, info

    def _lifted(self) -> bool:
        """Whether both fingers hold the object `lift_height` up."""
        return self._lift >= self.lift_height and self._contacts == 2

    def _placed(self) -> bool:
        """Whether the carried object rests on the floor on the spot with the fingers off it."""
        return (
            self._carrying and self._contacts == 0 and self._lift < 0.005
            and self._spot_distance < self.place_tolerance and self._object_speed < 0.05
        )

    def _phi(self) -> float:
        lift = min(max(self._lift / self.lift_height, 0.0), 1.0)
        if self._carrying:
            near = 1.0 - math.tanh(10.0 * self._spot_distance)
            overlift = max(self._lift / self.lift_height - 1.5, 0.0)
            return 9.5 + 4.0 * near + 2.0 * near * (1.0 - lift) - 2.0 * overlift
        reach = 1.0 - math.tanh(10.0 * self._distance)
        return reach + 0.25 * self._contacts + 3.0 * lift * (self._contacts > 0)

    def _observe(self) -> np.ndarray:
        c = self.client
        state = c.getLinkState(self.robot, GRASP_TARGET, computeLinkVelocity=1)
        gripper, gripper_velocity = state[4], state[6]
        position, orientation = c.getBasePositionAndOrientation(self.object)
        velocity, _ = c.getBaseVelocity(self.object)
        fingers = c.getJointStates(self.robot, FINGERS)
        touching = {point[3] for point in c.getContactPoints(self.robot, self.object)}
        self._contacts = (FINGERS[0] in touching) + (FINGERS[1] in touching)
        self._distance = math.sqrt(sum((position[i] - gripper[i]) ** 2 for i in range(3)))
        self._lift = position[2] - self._rest_height
        self._object_speed = math.sqrt(sum(v * v for v in velocity))
        self._spot_distance = math.hypot(self._spot[0] - position[0], self._spot[1] - position[1])
        if self.goal == "place":
            dropped = self._contacts == 0 and self._lift < 0.005 and self._spot_distance >= self.place_tolerance
            self._carrying = self._lifted() or (self._carrying and not dropped)
        goal = (*self._spot, self._rest_height) if self._carrying else position
        relative = [goal[i] - gripper[i] for i in range(3)]
        relative_yaw = 2 * (c.getEulerFromQuaternion(orientation)[2] - self._yaw)
        values = (
            (gripper[0] - WORKSPACE[0]) / 0.2, gripper[1] / 0.2, gripper[2] / 0.2,
            *(v / 0.5 for v in gripper_velocity),
            (fingers[0][0] + fingers[1][0]) / 0.08,
            *(r / 0.1 for r in relative),
            self._lift / self.lift_height,
            *(v / 0.5 for v in velocity),
            self._contacts / 2, self._elongation * math.sin(relative_yaw), self._elongation * math.cos(relative_yaw),
            self._yaw / MAX_YAW,
            1.0 - self._steps / self.max_steps,
        )
        return np.array([min(max(v, -5.0), 5.0) for v in values], dtype=np.float32)

    def _camera(self) -> tuple[list[float], list[float]]:
        return [1.0, 0.45, 0.45], [0.5, 0.0, 0.05]
