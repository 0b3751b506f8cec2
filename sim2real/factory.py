"""Build a ready env for a task and target: the domain applied, randomized or not, the reality gap on top."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym

from sim2real import catalog
from sim2real.adapters import Binder
from sim2real.callables import import_callable, is_registered
from sim2real.checks import check_seed
from sim2real.errors import ConfigError, Sim2RealError
from sim2real.spec import SOURCE, TaskSpec
from sim2real.wrappers import ActionDelay, ActionNoise, DomainWrapper, ObservationNoise


def make_env(
    task: str | Path | TaskSpec,
    target: str = SOURCE,
    seed: int | None = None,
    randomize: bool = False,
    *,
    render_mode: str | None = None,
    randomization_scale: float = 1.0,
    reality_gap: bool = True,
    **kwargs: Any,
) -> gym.Env:
    """Build the env of `task` (a catalogue name, a YAML path or a TaskSpec) in the domain of `target`.

    With ``randomize=True`` the task's randomization is drawn afresh at every reset (scaled by
    `randomization_scale`), around the target's values. The target's reality gap (sensor noise,
    actuator noise, latency) is applied unless ``reality_gap=False``. Extra keyword arguments go
    to the env constructor, over the task's and the target's own.
    """
    spec = catalog.load(task)
    chosen = spec.target(target)
    _check_options(seed, randomize, randomization_scale, reality_gap)
    env = _construct(spec, {**spec.kwargs, **chosen.task, **kwargs}, render_mode)
    binder = Binder(env, spec.params, source=str(spec.path))
    env = DomainWrapper(
        env,
        binder,
        spec.domain(target),
        randomization=spec.randomization if randomize else None,
        params=spec.params,
        scale=randomization_scale,
    )
    gap = chosen.reality_gap
    if reality_gap and not gap.empty:
        if gap.action_delay_steps:
            env = ActionDelay(env, gap.action_delay_steps)
        if gap.action_noise_std:
            env = ActionNoise(env, gap.action_noise_std)
        if gap.obs_noise_std:
            env = ObservationNoise(env, gap.obs_noise_std)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _check_options(seed: Any, randomize: Any, scale: Any, reality_gap: Any) -> None:
    """Refuse what would otherwise fail later (at reset) or be read as its opposite (randomize="no")."""
    for name, value in (("randomize", randomize), ("reality_gap", reality_gap)):
        if not isinstance(value, bool):
            raise Sim2RealError(f"{name} must be True or False, got {value!r}")
    if seed is not None:
        check_seed(seed)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale < 0:
        raise Sim2RealError(f"randomization_scale must be a finite number >= 0 (1 = the task's ranges), "
                            f"got {scale!r}")


def _construct(spec: TaskSpec, kwargs: dict[str, Any], render_mode: str | None) -> gym.Env:
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        if not is_registered(spec.env_id) and ":" in spec.env_id:
            env_class = import_callable(spec.env_id, key="id")
            return env_class(**kwargs)
        return gym.make(spec.env_id, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(f"cannot make env '{spec.env_id}': {exc}", source=str(spec.path), key="id") from exc
    except Sim2RealError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env '{spec.env_id}' rejected its kwargs {sorted(kwargs)}: {exc}",
                          source=str(spec.path), key="kwargs") from exc
