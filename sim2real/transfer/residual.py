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
actions: on a robot those are crashes), can hold the actor still for ``critic_warmup`` steps
while the critic learns the target's values of the pretrained behaviour (WSRL, 2024), and can
anchor the actor to the pretrained behaviour with a behaviour-cloning term (TD3+BC's, Fujimoto &
Gu 2021): a critic trained on a few thousand steps around the pretrained actions is wrong away
from them, and its gradient alone drags a correction off before it has seen where it leads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn
from torch.nn import functional as F

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
        action, log_prob, _, _ = self._sample(obs)
        return action, log_prob

    def action_log_prob_deviation(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`action_log_prob`, plus how far the deterministic action lies from the base action."""
        action, log_prob, mean, base = self._sample(obs)
        return action, log_prob, self._combine(base, torch.tanh(mean)) - base

    def _sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action, its log-density, and the correction's mean and the base action it was built from."""
        mean, log_std, base = self._parameters_and_base(obs)
        correction, log_prob = self.action_dist.log_prob_from_params(mean, log_std)
        log_prob = log_prob - correction.shape[1] * math.log(self.residual_scale)
        return self._combine(base, correction), log_prob, mean, base


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
    """SAC that acts with its policy from the first step, can warm its critic up first and anchor its actor.

    SB3's SAC takes uniform random actions until ``learning_starts``; around a pretrained base
    that throws its behaviour away, so this class never does. For the first ``critic_warmup``
    steps the actor is held still (the critic and the entropy coefficient still learn), so the
    critic learns the target's values of the pretrained behaviour before the actor follows it.
    With ``anchor`` > 0 the actor's loss gains ``anchor · mean|Q| · mean((a(s) − base(s))²)``,
    a pull of the deterministic action toward the pretrained one in SB3's [-1, 1] action space;
    the batch's mean |Q| (not differentiated) makes the weight independent of the reward's scale,
    so ``anchor`` 0.4 is TD3+BC's α = 2.5.
    """

    def __init__(self, *args: Any, critic_warmup: int = 0, anchor: float = 0.0, **kwargs: Any) -> None:
        self.critic_warmup = int(critic_warmup)
        self.anchor = float(anchor)
        super().__init__(*args, **kwargs)

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> Any:
        return super()._sample_action(0, action_noise, n_envs)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """SAC's update (entropy coefficient, then critics, then actor, then the targets' Polyak average).

        The same update as SB3's ``SAC.train`` (a test holds them equal), written out here for the
        two things it cannot do: skip the actor during the critic warm-up, and add the anchor.
        """
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        actor_moves = self.num_timesteps > self.critic_warmup
        logs: dict[str, list[float]] = defaultdict(list)
        for gradient_step in range(gradient_steps):
            batch = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            actions, log_prob, deviation = self.actor.action_log_prob_deviation(batch.observations)
            log_prob = log_prob.reshape(-1, 1)
            ent_coef = self._update_entropy(log_prob, logs)
            self._update_critic(batch, ent_coef, logs)
            if actor_moves:
                self._update_actor(batch.observations, actions, log_prob, deviation, ent_coef, logs)
            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in logs.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def _update_entropy(self, log_prob: torch.Tensor, logs: dict[str, list[float]]) -> torch.Tensor:
        """One step of the learned entropy coefficient (if it is learned); the coefficient to use now."""
        if self.ent_coef_optimizer is None or self.log_ent_coef is None:
            logs["ent_coef"].append(float(self.ent_coef_tensor))
            return self.ent_coef_tensor
        ent_coef = torch.exp(self.log_ent_coef.detach())
        loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()
        logs["ent_coef"].append(float(ent_coef))
        logs["ent_coef_loss"].append(loss.item())
        self.ent_coef_optimizer.zero_grad()
        loss.backward()
        self.ent_coef_optimizer.step()
        return ent_coef

    def _update_critic(self, batch: ReplayBufferSamples, ent_coef: torch.Tensor, logs: dict[str, list[float]]) -> None:
        """One soft Bellman step of every Q-network toward the clipped double-Q target."""
        discounts = batch.discounts if batch.discounts is not None else self.gamma
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(batch.next_observations)
            next_q = torch.cat(self.critic_target(batch.next_observations, next_actions), dim=1)
            next_q = torch.min(next_q, dim=1, keepdim=True).values - ent_coef * next_log_prob.reshape(-1, 1)
            target = batch.rewards + (1 - batch.dones) * discounts * next_q
        current = self.critic(batch.observations, batch.actions)
        loss = 0.5 * sum(F.mse_loss(q, target) for q in current)
        logs["critic_loss"].append(loss.item())
        self.critic.optimizer.zero_grad()
        loss.backward()
        self.critic.optimizer.step()

    def _update_actor(self, observations: torch.Tensor, actions: torch.Tensor, log_prob: torch.Tensor,
                      deviation: torch.Tensor, ent_coef: torch.Tensor, logs: dict[str, list[float]]) -> None:
        """One step of the actor toward high soft Q, pulled toward the base action by the anchor."""
        q_values = torch.min(torch.cat(self.critic(observations, actions), dim=1), dim=1, keepdim=True).values
        loss = (ent_coef * log_prob - q_values).mean()
        logs["actor_loss"].append(loss.item())
        if self.anchor > 0:
            anchor_loss = self.anchor * q_values.abs().mean().detach() * deviation.pow(2).mean()
            logs["anchor_loss"].append(anchor_loss.item())
            loss = loss + anchor_loss
        self.actor.optimizer.zero_grad()
        loss.backward()
        self.actor.optimizer.step()
