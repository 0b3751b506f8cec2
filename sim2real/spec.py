"""What a task is, once its YAML is checked: the TaskSpec and its parts (targets, reality gap, training, threshold).

:mod:`sim2real.catalog` reads and checks the YAML files into these; everything else reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim2real.domain import Distribution, DomainParam, Value, nominal_values
from sim2real.errors import ConfigError, allowed

SOURCE = "source"
ALGOS = ("ppo", "sac")
TARGET_KINDS = ("near", "far", "real", "task")
REALITY_GAP_KEYS = ("obs_noise_std", "action_noise_std", "action_delay_steps")


@dataclass(frozen=True)
class RealityGap:
    """Sensor and actuator imperfections of a target: noise std per step, latency in control steps."""

    obs_noise_std: float | tuple[float, ...] = 0.0
    action_noise_std: float | tuple[float, ...] = 0.0
    action_delay_steps: int = 0

    @property
    def empty(self) -> bool:
        """True when the gap changes nothing."""
        return not (_any_positive(self.obs_noise_std) or _any_positive(self.action_noise_std)
                    or self.action_delay_steps)


def _any_positive(value: float | tuple[float, ...]) -> bool:
    return any(v > 0 for v in value) if isinstance(value, tuple) else value > 0


@dataclass(frozen=True)
class Target:
    """A named shifted domain (and optionally a changed task) to transfer to."""

    name: str
    kind: str
    description: str
    params: Mapping[str, Value]
    reality_gap: RealityGap = RealityGap()
    task: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlgoConfig:
    """How to pretrain with one algorithm: env steps, parallel envs, SB3 constructor keywords."""

    steps: int
    n_envs: int
    hyperparameters: Mapping[str, Any]


@dataclass(frozen=True)
class TrainSpec:
    """Pretraining settings: the default algorithm and a config per algorithm the task supports."""

    algo: str
    configs: Mapping[str, AlgoConfig]
    eval_every: int
    eval_episodes: int
    stop_at: Threshold | None = None
    """Training ends at the first evaluation that reaches this level (None: it runs all its steps)."""
    eval_gate: float = 0.0
    """A periodic evaluation is skipped while less than this share of the last 100 training episodes succeeded."""

    def config(self, algo: str | None = None) -> AlgoConfig:
        """The config for `algo` (default: the task's own algorithm)."""
        algo = algo or self.algo
        if algo not in ALGOS:
            raise ConfigError(f"unknown algorithm '{algo}' (allowed: {allowed(ALGOS)})", key="train.algo")
        return self.configs.get(algo) or AlgoConfig(steps=self.configs[self.algo].steps, n_envs=1, hyperparameters={})


@dataclass(frozen=True)
class Threshold:
    """The success level that 'time to threshold' uses: a success rate or a mean return."""

    metric: str
    value: float

    def reached(self, success: float, mean_return: float) -> bool:
        """Whether an evaluation with this success rate and mean return meets the threshold."""
        return (success if self.metric == "success" else mean_return) >= self.value


@dataclass(frozen=True)
class TransferDefaults:
    """Harness defaults for this task: target budget, evaluation cadence and size, seeds."""

    budget: int = 50_000
    eval_every: int = 5_000
    episodes: int = 20
    seeds: int = 3
    strategies: tuple[str, ...] = ("zero_shot", "finetune", "freeze_base", "reinit_head", "scratch")


@dataclass(frozen=True)
class TaskSpec:
    """A validated task: env id and kwargs, domain parameters, randomization, targets, training."""

    name: str
    path: Path
    env_id: str
    description: str
    kwargs: Mapping[str, Any]
    params: Mapping[str, DomainParam]
    randomization: Mapping[str, Distribution]
    targets: Mapping[str, Target]
    train: TrainSpec
    threshold: Threshold
    transfer: TransferDefaults
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def target(self, name: str) -> Target:
        """The named target; 'source' is the nominal domain."""
        if name == SOURCE:
            return Target(SOURCE, "source", "the nominal source domain", {})
        if name not in self.targets:
            raise ConfigError(
                f"unknown target '{name}' (allowed: {allowed([SOURCE, *self.targets])})", source=str(self.path),
                key="targets",
            )
        return self.targets[name]

    def domain(self, target: str = SOURCE) -> dict[str, Value]:
        """The full domain of a target: nominal values overridden by the target's params."""
        return {**nominal_values(self.params), **self.target(target).params}

    @property
    def spec_hash(self) -> str:
        """A short hash of the YAML content, recorded in policy cards to detect a changed task."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]
