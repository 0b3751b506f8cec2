"""Residual SAC: a frozen pretrained policy plus a learned, zero-initialised correction of its action.

The actor's action is ``clip(base(s) + scale · tanh(u), -1, 1)`` in SB3's scaled action space,
where ``base`` is the pretrained policy's deterministic action (a PPO policy's clipped mean or a
SAC actor's squashed mean, its weights frozen inside the actor) and ``u`` is a squashed-Gaussian
correction whose mean layer starts at zero. So the deterministic residual policy *is* the
pretrained one at step 0, exploration happens around the pretrained behaviour, and the critic
sees the action the env receives (a pretrained SAC critic carries over as it is). The correction
reads the observation and the base action, so it can learn a map of the action (a turned or
rescaled command) as well as a state-dependent offset (Silver et al. 2018; Johannink et al. 2019).

:class:`ResidualSAC` also acts with its policy from the first step (never uniform random
actions: on a robot those are crashes) and can hold the actor still for ``critic_warmup`` steps
while the critic learns the target's values of the pretrained behaviour (WSRL, 2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, create_mlp
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from sim2real.transfer.errors import TransferError


class FrozenBase(nn.Module):
    """The pretrained policy's deterministic action in [-1, 1] (SB3's scaled action space), weights frozen.

    ``spec`` is plain data (see :func:`base_spec`), so a saved residual model rebuilds this module
    from its policy_kwargs and takes the weights from its state dict.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        activation = getattr(nn, spec["activation"])
        self.squashed = bool(spec["squashed"])
        self.net = nn.Sequential(*create_mlp(spec["observation_dim"], spec["action_dim"], list(spec["net_arch"]),
                                             activation))
        self.register_buffer("low", torch.as_tensor(spec["low"], dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(spec["high"], dtype=torch.float32))
        self.requires_grad_(False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The base action for flattened observations: tanh of a SAC mean, or a PPO mean clipped and scaled."""
        mean = self.net(features)
        if self.squashed:
            return torch.tanh(mean)
        clipped = torch.clamp(mean, self.low, self.high)
        return 2.0 * (clipped - self.low) / (self.high - self.low) - 1.0


def base_spec(model: BaseAlgorithm) -> dict[str, Any]:
    """Plain-data description of ``model``'s deterministic policy network, for :class:`FrozenBase`."""
    policy = model.policy
    if not isinstance(model.action_space, spaces.Box) or not isinstance(model.observation_space, spaces.Box):
        raise TransferError(f"residual needs Box observation and action spaces; the pretrained {type(model).__name__} "
                            f"has {model.observation_space} and {model.action_space}")
    if isinstance(model, SAC):
        extractor, activation, arch = policy.actor.features_extractor, policy.actor.activation_fn, policy.actor.net_arch
        squashed = True
    elif isinstance(model, PPO) and isinstance(policy, ActorCriticPolicy):
        extractor, activation, squashed = policy.pi_features_extractor, policy.activation_fn, False
        arch = [layer.out_features for layer in policy.mlp_extractor.policy_net if isinstance(layer, nn.Linear)]
    else:
        raise TransferError(f"residual supports PPO and SAC base policies, not {type(model).__name__}")
    if not isinstance(extractor, FlattenExtractor) or not hasattr(nn, activation.__name__):
        raise TransferError("residual needs an MLP base policy on flat observations (FlattenExtractor, a torch.nn "
                            f"activation); the pretrained policy has {type(extractor).__name__}")
    if getattr(model, "use_sde", False):
        raise TransferError("residual needs a base policy without gSDE exploration (use_sde=False)")
    return {
        "squashed": squashed,
        "observation_dim": int(np.prod(model.observation_space.shape)),
        "action_dim": int(np.prod(model.action_space.shape)),
        "net_arch": [int(width) for width in arch],
        "activation": activation.__name__,
        "low": [float(v) for v in np.ravel(model.action_space.low)],
        "high": [float(v) for v in np.ravel(model.action_space.high)],
    }


def load_base_weights(model: BaseAlgorithm, base: FrozenBase) -> None:
    """Copy ``model``'s policy network (hidden layers and action mean) into ``base``, layer by layer."""
    policy = model.policy
    if isinstance(model, SAC):
        source = [*policy.actor.latent_pi, policy.actor.mu]
    else:
        source = [*policy.mlp_extractor.policy_net, policy.action_net]
    source_linear = [layer for layer in source if isinstance(layer, nn.Linear)]
    target_linear = [layer for layer in base.net if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        for src, dst in zip(source_linear, target_linear, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


class ResidualActor(Actor):
    """SAC's actor with a frozen base: action = clip(base + scale · correction, -1, 1)."""

    def __init__(self, *args: Any, base: Mapping[str, Any], residual_scale: float, residual_log_std: float,
                 **kwargs: Any) -> None:
        features_dim = kwargs["features_dim"]
        action_dim = int(np.prod(kwargs["action_space"].shape))
        kwargs["features_dim"] = features_dim + action_dim  # the correction reads the observation and the base action
        super().__init__(*args, **kwargs)
        self.features_dim = features_dim
        self.base_spec = dict(base)
        self.residual_scale = float(residual_scale)
        self.residual_log_std = float(residual_log_std)
        self.base = FrozenBase(base)
        with torch.no_grad():
            self.mu.weight.zero_()
            self.mu.bias.zero_()
            self.log_std.weight.zero_()
            self.log_std.bias.fill_(self.residual_log_std)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(base=self.base_spec, residual_scale=self.residual_scale, residual_log_std=self.residual_log_std)
        return data

    def _parameters_and_base(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The correction's mean and log-std, and the base action."""
        features = self.extract_features(obs, self.features_extractor)
        base = self.base(features)
        latent = self.latent_pi(torch.cat([features, base], dim=1))
        log_std = torch.clamp(self.log_std(latent), LOG_STD_MIN, LOG_STD_MAX)
        return self.mu(latent), log_std, base

    def _combine(self, base: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
        return torch.clamp(base + self.residual_scale * correction, -1.0, 1.0)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """The action: the base action plus the (sampled or mean) correction, clipped to the action range."""
        mean, log_std, base = self._parameters_and_base(obs)
        correction = self.action_dist.actions_from_params(mean, log_std, deterministic=deterministic)
        return self._combine(base, correction)

    def action_log_prob(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action and the log-density of its correction (scaled by ``residual_scale``; clipping ignored)."""
        mean, log_std, base = self._parameters_and_base(obs)
        correction, log_prob = self.action_dist.log_prob_from_params(mean, log_std)
        return self._combine(base, correction), log_prob - correction.shape[1] * math.log(self.residual_scale)


class ResidualSACPolicy(SACPolicy):
    """SACPolicy whose actor is a :class:`ResidualActor`; the frozen base is left out of the actor's optimizer."""

    def __init__(self, *args: Any, base: Mapping[str, Any], residual_scale: float = 1.0,
                 residual_log_std: float = -1.0, **kwargs: Any) -> None:
        self.residual = {"base": dict(base), "residual_scale": float(residual_scale),
                         "residual_log_std": float(residual_log_std)}
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: Any = None) -> ResidualActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return ResidualActor(**actor_kwargs, **self.residual).to(self.device)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        trainable = [p for p in self.actor.parameters() if p.requires_grad]
        self.actor.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.residual)
        return data


class ResidualSAC(SAC):
    """SAC that acts with its policy from the first step and can hold the actor during a critic warm-up.

    SB3's SAC takes uniform random actions until ``learning_starts``; around a pretrained base
    that throws its behaviour away, so this class never does. For the first ``critic_warmup``
    steps the actor's gradient steps are skipped (the critic and the entropy coefficient still
    learn), so the critic learns the target's values of the pretrained behaviour before the
    actor follows it.
    """

    def __init__(self, *args: Any, critic_warmup: int = 0, **kwargs: Any) -> None:
        self.critic_warmup = int(critic_warmup)
        super().__init__(*args, **kwargs)

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> Any:
        return super()._sample_action(0, action_noise, n_envs)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """SAC's update, with the actor held still while ``num_timesteps`` is within the critic warm-up."""
        if self.num_timesteps > self.critic_warmup:
            super().train(gradient_steps, batch_size)
            return
        trainable = [p for group in self.actor.optimizer.param_groups for p in group["params"]]
        for parameter in trainable:
            parameter.requires_grad_(False)
        try:
            super().train(gradient_steps, batch_size)
        finally:
            for parameter in trainable:
                parameter.requires_grad_(True)
