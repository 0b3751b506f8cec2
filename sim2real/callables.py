"""What a name in a task or on a command line points at: "pkg.module:name", or a gymnasium id's entry point.

One resolver for the task YAML's ``id`` and ``bind.call``, the testbed server's ``--env`` and the
catalog's look-up of the parameters an env class declares, so each fails with the same one-line
error naming what could not be found.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from sim2real.errors import ConfigError
from sim2real.registration import register_envs


def import_callable(target: str, *, key: str) -> Callable[..., Any]:
    """Import "pkg.module:name", or raise a ConfigError naming what could not be found."""
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise ConfigError(f"'{target}' is not of the form 'pkg.module:function'", key=key)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module '{module_name}' for '{target}': {exc}", key=key) from exc
    if not callable(getattr(module, name, None)):
        raise ConfigError(f"module '{module_name}' has no callable '{name}'", key=key)
    return getattr(module, name)


def is_registered(env_id: str) -> bool:
    """Whether `env_id` is a gymnasium id (the built-in ones registered first)."""
    register_envs()
    return env_id in gym.registry


def env_entry_point(env_id: str, *, key: str = "id") -> Callable[..., Any]:
    """The class or function that makes the env `env_id` names: a gymnasium id's entry point, or "pkg.module:Class"."""
    if is_registered(env_id):
        entry = gym.registry[env_id].entry_point
        return entry if callable(entry) else import_callable(str(entry), key=key)
    if ":" in env_id:
        return import_callable(env_id, key=key)
    raise ConfigError(f"'{env_id}' is neither a registered gymnasium id nor 'pkg.module:Class'", key=key)
