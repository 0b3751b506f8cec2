"""Per-algorithm knowledge transfer needs: hyperparameters, heads, base layers, optimizers, target nets.

Adding an algorithm means subclassing :class:`AlgorithmSupport` and listing it in
:data:`ALGORITHMS`; :func:`sim2real.transfer.adapt` itself is algorithm-agnostic.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import (
    DictReplayBuffer,
    DictRolloutBuffer,
    NStepReplayBuffer,
    ReplayBuffer,
    RolloutBuffer,
)
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch import nn

from sim2real.errors import allowed
from sim2real.transfer.errors import TransferError
from sim2real.transfer.layers import layer_keys, select
from sim2real.transfer.strategies import Strategy, Training

FINETUNE_LEARNING_STARTS = 500
"""SAC's learning_starts when training from pretrained weights: a few random steps, then the policy acts."""

_NOT_HYPERPARAMETERS = frozenset({"self", "policy", "env", "seed", "_init_setup_model"})


class ScaledSchedule:
    """A learning-rate schedule multiplied by a constant; a class, so a saved model keeps it."""

    def __init__(self, schedule: Schedule, scale: float) -> None:
        self.schedule = schedule
        self.scale = scale

    def __call__(self, progress_remaining: float) -> float:
        """The scaled learning rate at this point of training."""
        return self.scale * float(self.schedule(progress_remaining))

    def __repr__(self) -> str:
        return f"ScaledSchedule({self.schedule!r}, {self.scale!r})"


class AlgorithmSupport:
    """How transfer reads, rebuilds and freezes one SB3 algorithm; subclass per algorithm."""

    algorithm: ClassVar[type[BaseAlgorithm]]
    targets: ClassVar[Mapping[str, str]] = {}
    """Online module → its Polyak-averaged target module, both attributes of the policy."""
    observation_nets: ClassVar[tuple[str, ...]] = ()
    """Module names of the networks whose first layer reads the observation's features alone."""

    def hyperparameters(self, model: BaseAlgorithm) -> dict[str, Any]:
        """Every constructor argument of ``model`` but policy, env and seed, read back from the model."""
        values: dict[str, Any] = {}
        signature = inspect.signature(type(model).__init__)
        for name, parameter in signature.parameters.items():
            if name in _NOT_HYPERPARAMETERS or parameter.kind in (
                parameter.VAR_POSITIONAL,
                parameter.VAR_KEYWORD,
            ):
                continue
            attribute = next((a for a in (name, "_" + name) if hasattr(model, a)), None)
            if attribute is None:
                raise TransferError(f"cannot read the hyperparameter {name!r} back from a {type(model).__name__}")
            values[name] = copy.deepcopy(getattr(model, attribute))
        values["tensorboard_log"] = None  # the pretrained run's log folder (often inside its bundle) is not ours
        return values

    def overrides(self, model: BaseAlgorithm, strategy: Strategy) -> dict[str, Any]:
        """The hyperparameters ``strategy`` changes: the learning rate, and off-policy ``learning_starts``."""
        if not isinstance(strategy, Training):
            return {}
        values: dict[str, Any] = {}
        if strategy.lr_scale != 1.0:
            rate = model.learning_rate
            scale = strategy.lr_scale
            values["learning_rate"] = rate * scale if isinstance(rate, int | float) else ScaledSchedule(rate, scale)
        if isinstance(model, OffPolicyAlgorithm):
            starts = strategy.learning_starts
            values["learning_starts"] = (
                min(FINETUNE_LEARNING_STARTS, model.learning_starts) if starts is None else starts
            )
            if strategy.utd is not None:
                values["gradient_steps"] = strategy.utd * model.train_freq.frequency
        return values

    def check(self, model: BaseAlgorithm, strategy: Strategy) -> None:
        """Reject options the model cannot honour: off-policy or entropy options elsewhere."""
        if not isinstance(strategy, Training):
            return
        name = type(model).__name__
        off_policy = isinstance(model, OffPolicyAlgorithm)
        if strategy.learning_starts is not None and not off_policy:
            raise TransferError(f"learning_starts applies to off-policy algorithms (SAC), not to {name}")
        if strategy.source_steps and not off_policy:
            raise TransferError(f"source_steps (a replay warm start) applies to off-policy algorithms (SAC), "
                                f"not to {name}: it has no replay buffer")
        if strategy.utd is not None and not off_policy:
            raise TransferError(f"utd (gradient steps per target step) applies to off-policy algorithms (SAC), "
                                f"not to {name}")
        if off_policy and strategy.utd is not None and model.train_freq.unit.value != "step":
            raise TransferError(f"utd needs a train_freq counted in steps; this {name} trains every "
                                f"{model.train_freq.frequency} {model.train_freq.unit.value}(s)")
        if strategy.reset_entropy and getattr(model, "log_ent_coef", None) is None:
            raise TransferError(
                f"reset_entropy needs a learned entropy coefficient (SAC with ent_coef='auto...'); "
                f"this {name} has ent_coef={getattr(model, 'ent_coef', None)!r}"
            )

    def build(
        self, model: BaseAlgorithm, env: GymEnv, *, seed: int | None, overrides: Mapping[str, Any]
    ) -> BaseAlgorithm:
        """A fresh model of ``model``'s class and hyperparameters (plus ``overrides``) on ``env``."""
        values = {**self.hyperparameters(model), **overrides}
        return type(model)(model.policy_class, env, seed=seed, **values)

    def heads(self, policy: nn.Module) -> tuple[str, ...]:
        """Module names of the output heads, the action log-std included."""
        raise NotImplementedError

    def trunks(self, policy: nn.Module) -> tuple[tuple[str, ...], ...]:
        """Per network (policy, value, each critic), the modules holding its hidden layers, input first."""
        raise NotImplementedError

    def observation_layers(self, policy: nn.Module) -> tuple[str, ...]:
        """The input layers that read the observation's features alone (those adapt() may widen)."""
        layers = tuple(layer_keys(policy))
        firsts = (select(layers, (net,)) for net in self.observation_nets)
        return tuple(found[0] for found in firsts if found)

    def optimizer_owners(self, model: BaseAlgorithm) -> dict[str, Any]:
        """The objects whose ``optimizer`` attribute SB3 steps, by name."""
        raise NotImplementedError

    def carry_state(self, source: BaseAlgorithm, target: BaseAlgorithm, strategy: Strategy) -> str | None:
        """Carry the learned entropy coefficient over, unless the strategy resets it; say which, for the report."""
        source_coef = getattr(source, "log_ent_coef", None)
        target_coef = getattr(target, "log_ent_coef", None)
        if target_coef is None:
            fixed = getattr(target, "ent_coef_tensor", None)
            return None if fixed is None else f"fixed at {float(fixed.detach()):.4g}"
        initial = float(target_coef.detach().exp())
        if source_coef is None:
            return f"learned from its initial value {initial:.4g} (the pretrained model has none)"
        if isinstance(strategy, Training) and strategy.reset_entropy:
            return f"reset to its initial value {initial:.4g}, then learned"
        with torch.no_grad():
            target_coef.copy_(source_coef)
        return f"carried over at {float(target_coef.detach().exp()):.4g}, then learned"


class PPOSupport(AlgorithmSupport):
    """PPO with an ActorCriticPolicy: action and value heads, log-std, separate policy and value MLPs."""

    algorithm = PPO
    observation_nets: ClassVar[tuple[str, ...]] = (
        "mlp_extractor.shared_net", "mlp_extractor.policy_net", "mlp_extractor.value_net"
    )

    def hyperparameters(self, model: BaseAlgorithm) -> dict[str, Any]:
        """PPO's constructor arguments, leaving the rollout buffer for SB3 to choose when it chose it."""
        values = super().hyperparameters(model)
        if values.get("rollout_buffer_class") in (RolloutBuffer, DictRolloutBuffer):
            values["rollout_buffer_class"] = None
        return values

    def heads(self, policy: nn.Module) -> tuple[str, ...]:
        """The action head, the value head and the action log-std."""
        return ("action_net", "value_net", "log_std")

    def trunks(self, policy: nn.Module) -> tuple[tuple[str, ...], ...]:
        """The policy trunk and the value trunk, each with its features extractor first."""
        return (
            ("features_extractor", "pi_features_extractor", "mlp_extractor.policy_net"),
            ("vf_features_extractor", "mlp_extractor.value_net"),
        )

    def optimizer_owners(self, model: BaseAlgorithm) -> dict[str, Any]:
        """One optimizer over the whole policy."""
        return {"policy": model.policy}


class SACSupport(AlgorithmSupport):
    """SAC: an actor (mu and log-std heads), twin critics (an output layer each) and their Polyak targets."""

    algorithm = SAC
    observation_nets: ClassVar[tuple[str, ...]] = ("actor.latent_pi",)  # the critics read observation and action
    targets: ClassVar[Mapping[str, str]] = {"critic": "critic_target"}

    def hyperparameters(self, model: BaseAlgorithm) -> dict[str, Any]:
        """SAC's constructor arguments, with the choices SB3 made from ``"auto"`` and defaults undone."""
        values = super().hyperparameters(model)
        buffer_class = values.get("replay_buffer_class")
        if buffer_class in (ReplayBuffer, DictReplayBuffer, NStepReplayBuffer):
            values["replay_buffer_class"] = None
            if buffer_class is NStepReplayBuffer:
                kwargs = dict(values["replay_buffer_kwargs"])
                for key in ("n_steps", "gamma"):
                    kwargs.pop(key, None)
                values["replay_buffer_kwargs"] = kwargs
        auto_entropy = -float(np.prod(model.action_space.shape))
        if values.get("target_entropy") == auto_entropy:
            values["target_entropy"] = "auto"
        return values

    def heads(self, policy: nn.Module) -> tuple[str, ...]:
        """The actor's mu and log-std layers and each critic's output layer."""
        return (
            "actor.mu",
            "actor.log_std",
            *(f"critic.{name}.{_last_layer(net)}" for name, net in _q_nets(policy)),
        )

    def trunks(self, policy: nn.Module) -> tuple[tuple[str, ...], ...]:
        """The actor trunk and one trunk per critic, each with its features extractor first."""
        actor = ("actor.features_extractor", "actor.latent_pi")
        return (actor, *(("critic.features_extractor", f"critic.{name}") for name, _ in _q_nets(policy)))

    def optimizer_owners(self, model: BaseAlgorithm) -> dict[str, Any]:
        """The actor's and the critic's optimizers (the entropy coefficient's is left alone)."""
        return {"actor": model.actor, "critic": model.critic}


def _q_nets(policy: nn.Module) -> list[tuple[str, nn.Module]]:
    """The critic's Q-networks with their module names."""
    names = {id(child): name for name, child in policy.critic.named_children()}
    return [(names[id(net)], net) for net in policy.critic.q_networks]


def _last_layer(net: nn.Module) -> str:
    """Name of the last child of ``net`` that holds parameters: a Q-network's output layer."""
    return [name for name, child in net.named_children() if next(child.parameters(), None) is not None][-1]


ALGORITHMS: dict[type[BaseAlgorithm], AlgorithmSupport] = {s.algorithm: s for s in (PPOSupport(), SACSupport())}
"""The algorithms transfer supports, by class (subclasses are supported through their base)."""


def support_for(model: object) -> AlgorithmSupport:
    """The support of ``model``'s algorithm, or an error naming the supported ones."""
    for cls in type(model).__mro__:
        if cls in ALGORITHMS:
            return ALGORITHMS[cls]
    names = allowed(cls.__name__ for cls in ALGORITHMS)
    raise TransferError(f"transfer does not support {type(model).__name__}; supported algorithms: {names}")
