"""Bind domain parameters to envs that know nothing of sim2real.

Three bindings, named in a task YAML under ``params.NAME.bind``:

- ``{attr: NAME}`` sets ``env.unwrapped.NAME`` (checked to exist when the env is built);
- ``{bullet: {body: B, links: [L, ...] | all, property: P}}`` changes PyBullet dynamics of named
  bodies/links in any PyBullet-based env, finding its physics client by itself; P is one of
  ``mass_scale``, ``lateral_friction``, ``restitution``, ``linear_damping``, ``angular_damping``;
- ``{call: "pkg.module:function"}`` calls ``function(env.unwrapped, value)``.

Envs that implement the domain protocol (``domain_params()`` and ``set_domain()``) need none.
Attribute and call bindings are applied before the env's reset; PyBullet bindings after it,
since many envs reload their bodies at reset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.callables import import_callable
from sim2real.domain import DomainParam, Value
from sim2real.errors import ConfigError, allowed

BULLET_PROPERTIES = ("mass_scale", "lateral_friction", "restitution", "linear_damping", "angular_damping")
_DYNAMICS_KEYWORD = {
    "lateral_friction": "lateralFriction",
    "restitution": "restitution",
    "linear_damping": "linearDamping",
    "angular_damping": "angularDamping",
}


class Binding:
    """Pushes one parameter's value into an env."""

    after_reset = False

    def check(self, env: gym.Env) -> None:
        """Raise a ConfigError now if this binding cannot work on `env`."""

    def apply(self, env: gym.Env, value: Value) -> None:
        """Set the parameter in the env."""
        raise NotImplementedError


SETTABLE = (int, float, bool, str, np.number, np.ndarray, list, tuple, type(None))
"""What an attribute may hold for a domain parameter to set it: plain values, not generators, methods or objects."""


@dataclass
class AttrBinding(Binding):
    """Sets an attribute of the unwrapped env."""

    param: str
    attr: str

    def check(self, env: gym.Env) -> None:
        if not hasattr(env.unwrapped, self.attr):
            public = sorted(k for k in vars(env.unwrapped) if not k.startswith("_"))
            raise ConfigError(
                f"{type(env.unwrapped).__name__} has no attribute '{self.attr}' (its attributes: {allowed(public)})",
                key=f"params.{self.param}.bind.attr",
            )
        current = getattr(env.unwrapped, self.attr)
        if not isinstance(current, SETTABLE):
            raise ConfigError(
                f"{type(env.unwrapped).__name__}.{self.attr} holds a {type(current).__name__}, not a value a domain "
                f"parameter can set (a number, bool, string or array); bind an attribute that holds the physics value",
                key=f"params.{self.param}.bind.attr",
            )

    def apply(self, env: gym.Env, value: Value) -> None:
        setattr(env.unwrapped, self.attr, value)


@dataclass
class CallBinding(Binding):
    """Calls a user function `function(unwrapped_env, value)` named as "pkg.module:function"."""

    param: str
    target: str
    function: Callable[[Any, Value], None] = field(init=False)

    def __post_init__(self) -> None:
        self.function = import_callable(self.target, key=f"params.{self.param}.bind.call")

    def apply(self, env: gym.Env, value: Value) -> None:
        self.function(env.unwrapped, value)


@dataclass
class BulletBinding(Binding):
    """Changes PyBullet dynamics of named links of a named body, in whatever client the env uses."""

    param: str
    body: str
    links: tuple[str, ...] | None
    property: str
    after_reset = True
    _nominal: dict[tuple[int, int], float] = field(default_factory=dict, init=False)
    _applied: dict[tuple[int, int], float] = field(default_factory=dict, init=False)

    def check(self, env: gym.Env) -> None:
        client = find_bullet_client(env, key=f"params.{self.param}.bind.bullet")
        if client.getNumBodies() > 0:
            self._resolve(client)

    def apply(self, env: gym.Env, value: Value) -> None:
        client = find_bullet_client(env, key=f"params.{self.param}.bind.bullet")
        body, links = self._resolve(client)
        for link in links:
            if self.property == "mass_scale":
                current = client.getDynamicsInfo(body, link)[0]
                if self._applied.get((body, link)) != current:
                    self._nominal[(body, link)] = current
                mass = self._nominal[(body, link)] * float(value)
                client.changeDynamics(body, link, mass=mass)
                self._applied[(body, link)] = client.getDynamicsInfo(body, link)[0]
            else:
                client.changeDynamics(body, link, **{_DYNAMICS_KEYWORD[self.property]: float(value)})

    def _resolve(self, client: Any) -> tuple[int, list[int]]:
        key = f"params.{self.param}.bind.bullet"
        bodies = {}
        for index in range(client.getNumBodies()):
            uid = client.getBodyUniqueId(index)
            base, name = (part.decode() for part in client.getBodyInfo(uid))
            bodies.setdefault(name, uid)
            bodies.setdefault(base, uid)
        if self.body not in bodies:
            raise ConfigError(f"no PyBullet body named '{self.body}' (bodies: {allowed(sorted(bodies))})", key=key)
        uid = bodies[self.body]
        names = {client.getBodyInfo(uid)[0].decode(): -1}
        names.update({client.getJointInfo(uid, j)[12].decode(): j for j in range(client.getNumJoints(uid))})
        if self.links is None:
            return uid, sorted(names.values())
        missing = [link for link in self.links if link not in names]
        if missing:
            raise ConfigError(
                f"body '{self.body}' has no link(s) {allowed(missing)} (links: {allowed(names)})", key=key
            )
        return uid, [names[link] for link in self.links]


def find_bullet_client(env: gym.Env, *, key: str) -> Any:
    """Find the PyBullet client an env steps, looking at its attributes (a BulletClient or a client id)."""
    import pybullet
    from pybullet_utils.bullet_client import BulletClient

    unwrapped = env.unwrapped
    for value in vars(unwrapped).values():
        if isinstance(value, BulletClient):
            return value
    for name in ("physics_client", "physicsClientId", "client_id", "_client", "client", "_p"):
        value = getattr(unwrapped, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and pybullet.isConnected(value):
            return _ClientById(value)
    raise ConfigError(
        f"{type(unwrapped).__name__} holds no PyBullet client (no BulletClient attribute or client id)", key=key
    )


class _ClientById:
    """Calls pybullet functions with a fixed physicsClientId, like BulletClient does."""

    def __init__(self, client_id: int) -> None:
        self._id = client_id

    def __getattr__(self, name: str) -> Any:
        import pybullet

        function = getattr(pybullet, name)
        return lambda *args, **kwargs: function(*args, physicsClientId=self._id, **kwargs)


def make_binding(param: DomainParam) -> Binding:
    """Build the binding a parameter's YAML `bind` entry names."""
    key = f"params.{param.name}.bind"
    spec = param.bind or {}
    if len(spec) != 1 or next(iter(spec)) not in ("attr", "bullet", "call"):
        raise ConfigError(f"expected exactly one of 'attr', 'bullet', 'call', got {dict(spec)!r}", key=key)
    (kind, value), = spec.items()
    if kind == "attr":
        if not isinstance(value, str):
            raise ConfigError(f"'attr' takes an attribute name, got {value!r}", key=key)
        return AttrBinding(param.name, value)
    if kind == "call":
        if not isinstance(value, str):
            raise ConfigError(f"'call' takes 'pkg.module:function', got {value!r}", key=key)
        return CallBinding(param.name, value)
    if not isinstance(value, Mapping) or set(value) - {"body", "links", "property"} or "body" not in value:
        raise ConfigError(f"'bullet' takes {{body, links, property}}, got {value!r}", key=key)
    prop = value.get("property", "mass_scale")
    if prop not in BULLET_PROPERTIES:
        raise ConfigError(f"unknown property '{prop}' (allowed: {allowed(BULLET_PROPERTIES)})", key=key)
    links = value.get("links", "all")
    links = None if links == "all" else tuple([links] if isinstance(links, str) else links)
    return BulletBinding(param.name, str(value["body"]), links, prop)


class Binder:
    """Applies a whole domain to an env: through its own `set_domain`, or through per-parameter bindings."""

    def __init__(self, env: gym.Env, params: Mapping[str, DomainParam], source: str | None = None) -> None:
        self.protocol = callable(getattr(env.unwrapped, "set_domain", None)) and callable(
            getattr(env.unwrapped, "domain_params", None)
        )
        self.bindings: dict[str, Binding] = {}
        try:
            self._bind(env, params)
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source) from exc

    def _bind(self, env: gym.Env, params: Mapping[str, DomainParam]) -> None:
        known = env.unwrapped.domain_params() if self.protocol else {}
        for name, param in params.items():
            if param.bind is None and name in known:
                continue
            if param.bind is None:
                reason = f"its params are {allowed(known)}" if self.protocol else "it does not implement set_domain()"
                raise ConfigError(
                    f"'{name}' has no 'bind' entry and {type(env.unwrapped).__name__} cannot take it ({reason})",
                    key=f"params.{name}",
                )
            self.bindings[name] = make_binding(param)
            self.bindings[name].check(env)

    def before_reset(self, env: gym.Env, values: Mapping[str, Value]) -> None:
        """Apply what must be in place when the env resets (protocol values, attributes, calls)."""
        if self.protocol:
            env.unwrapped.set_domain({k: v for k, v in values.items() if k not in self.bindings})
        for name, binding in self.bindings.items():
            if not binding.after_reset and name in values:
                binding.apply(env, values[name])

    def after_reset(self, env: gym.Env, values: Mapping[str, Value]) -> None:
        """Apply what the env's reset would undo (PyBullet dynamics)."""
        for name, binding in self.bindings.items():
            if binding.after_reset and name in values:
                binding.apply(env, values[name])
