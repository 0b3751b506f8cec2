"""Shared plumbing of the built-in PyBullet envs: one private client each, the domain protocol, rendering."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from sim2real.bullet.quiet import c_output_silenced
from sim2real.domain import DomainParam, Value, nominal_values, validate_values


class BoundClient(BulletClient):
    """A BulletClient that binds each pybullet function to its client id once, not on every use.

    BulletClient's ``__getattr__`` builds a new ``functools.partial`` at every attribute access
    (~2.5 µs; a grasping step makes ~18 of them, a tenth of its cost); kept as an instance
    attribute, the bound function is found without ``__getattr__`` from then on.
    """

    def __getattr__(self, name: str) -> Any:
        attribute = super().__getattr__(name)
        if name != "disconnect" and isinstance(attribute, functools.partial):
            setattr(self, name, attribute)
        return attribute


class BulletEnv(gym.Env):
    """A gymnasium env owning one DIRECT-mode BulletClient and implementing the domain protocol.

    Subclasses declare ``DOMAIN_PARAMS`` and implement ``_build`` (load bodies once),
    ``_apply_domain`` (push domain values into the physics) and ``_camera`` (for rendering).
    Domain values set with :meth:`set_domain` take effect at the next :meth:`reset`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 25}
    DOMAIN_PARAMS: ClassVar[Mapping[str, DomainParam]] = {}
    observation_labels: ClassVar[tuple[str, ...]] = ()
    """What each observation entry is (figures name them); entries past its end are unnamed."""
    render_size: tuple[int, int] = (320, 240)

    def __init__(self, render_mode: str | None = None, domain: Mapping[str, Value] | None = None) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode {render_mode!r} is not supported (allowed: None, 'rgb_array')")
        self.render_mode = render_mode
        with c_output_silenced():
            self.client = BoundClient(connection_mode=pybullet.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        # Without sorted overlapping pairs, an episode depends on the ones before it (at ~1e-6,
        # which a car on the grip limit turns into a different run): reset(seed) must not.
        self.client.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._domain: dict[str, Value] = nominal_values(self.DOMAIN_PARAMS)
        self._pending: dict[str, Value] = dict(self._validate(domain or {}))
        self._state_id: int | None = None

    @classmethod
    def domain_params(cls) -> dict[str, DomainParam]:
        """The physical parameters this env exposes, with nominal values and bounds."""
        return dict(cls.DOMAIN_PARAMS)

    @property
    def domain(self) -> dict[str, Value]:
        """The domain values in force since the last reset."""
        return dict(self._domain)

    def set_domain(self, values: Mapping[str, Value]) -> None:
        """Validate and queue domain values; they are applied at the next reset."""
        self._pending.update(self._validate(values))

    def _validate(self, values: Mapping[str, Value]) -> dict[str, Value]:
        return validate_values(self.DOMAIN_PARAMS, values, source=type(self).__name__)

    def _reset_physics(self) -> None:
        """Restore the saved initial world, applying any pending domain values first."""
        if self._state_id is None:
            self._build()
            self._apply_domain(self._domain, changed=set(self._domain))
            self._state_id = self.client.saveState()
        if self._pending:
            changed = {k for k, v in self._pending.items() if self._domain.get(k) != v}
            self._domain.update(self._pending)
            self._pending.clear()
            if changed:
                self.client.restoreState(self._state_id)
                self._apply_domain(self._domain, changed=changed)
                self.client.removeState(self._state_id)
                self._state_id = self.client.saveState()
        self.client.restoreState(self._state_id)

    def _build(self) -> None:
        raise NotImplementedError

    def _apply_domain(self, values: Mapping[str, Value], changed: set[str]) -> None:
        raise NotImplementedError

    def _camera(self) -> tuple[list[float], list[float]]:
        """Camera eye and target positions for rendering."""
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        """An RGB frame from the CPU renderer (only with render_mode='rgb_array')."""
        if self.render_mode != "rgb_array":
            return None
        width, height = self.render_size
        eye, target = self._camera()
        view = self.client.computeViewMatrix(eye, target, [0, 0, 1])
        projection = self.client.computeProjectionMatrixFOV(60, width / height, 0.05, 30)
        _, _, rgba, _, _ = self.client.getCameraImage(
            width, height, view, projection, renderer=pybullet.ER_TINY_RENDERER
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]

    def close(self) -> None:
        """Disconnect this env's private physics client."""
        if self.client is not None and self.client.isConnected():
            self.client.disconnect()
        super().close()
