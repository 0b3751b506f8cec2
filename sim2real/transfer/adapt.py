"""adapt(): turn a pretrained SB3 model into one ready to ``learn()`` on a target env, per a strategy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import GymEnv

from sim2real.errors import allowed
from sim2real.transfer.algorithms import ALGORITHMS, AlgorithmSupport, support_for
from sim2real.transfer.errors import TransferError
from sim2real.transfer.freezing import freeze, hold_target
from sim2real.transfer.l2sp import install_l2sp
from sim2real.transfer.layers import layer_keys, layer_of_keys, matches, select, transplant
from sim2real.transfer.optimizers import without_frozen
from sim2real.transfer.replay import warm_start_replay
from sim2real.transfer.residual import ResidualSAC, ResidualSACPolicy, base_spec, load_base_weights
from sim2real.transfer.strategies import L2SP, Freezing, Residual, Strategy, SysidFinetune, get_strategy

REPORT_ATTRIBUTE = "sim2real_transfer_report"
"""Name of the attribute under which adapt() leaves its :class:`TransferReport` on the returned model."""


@dataclass(frozen=True)
class TransferReport:
    """What adapt() did, by layer: reused from the pretrained model, widened to new inputs, re-initialised, frozen."""

    strategy: Mapping[str, Any]
    algorithm: str
    seed: int | None
    trains: bool
    spaces_changed: bool
    reused: tuple[str, ...] = ()
    widened: tuple[str, ...] = ()
    reinitialised: tuple[str, ...] = ()
    shape_mismatch: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    entropy: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data, to record alongside results."""
        return {
            "strategy": dict(self.strategy),
            "algorithm": self.algorithm,
            "seed": self.seed,
            "trains": self.trains,
            "spaces_changed": self.spaces_changed,
            "reused": list(self.reused),
            "widened": list(self.widened),
            "reinitialised": list(self.reinitialised),
            "shape_mismatch": list(self.shape_mismatch),
            "frozen": list(self.frozen),
            "overrides": {k: v if isinstance(v, int | float) else repr(v) for k, v in self.overrides.items()},
            "entropy": self.entropy,
        }


def adapt(
    model: BaseAlgorithm,
    env: GymEnv,
    strategy: Strategy | str,
    *,
    seed: int | None = None,
    sac_hyperparameters: Mapping[str, Any] | None = None,
    source_env: gym.Env | None = None,
    **options: Any,
) -> BaseAlgorithm:
    """Prepare ``model`` (pretrained PPO or SAC) for training on ``env`` (the target) as ``strategy`` says.

    ``strategy`` is a :class:`Strategy` or a registered name with its ``options`` (a transductive
    one prepares the model as its inner strategy does: ``env`` is then the fitted simulator). Except for
    ``zero_shot``, which returns ``model`` itself (never train it: ``strategy.trains`` is False),
    the result is a *new* model of the same class and hyperparameters built on ``env`` and seeded
    with ``seed``; the pretrained model is left untouched. Layers whose name and shapes fit the
    target's spaces are copied from it; a layer that only takes more inputs (the target's
    observation appends entries) is widened, the new inputs' weights starting at zero, and is
    trained but never frozen or anchored; the others keep their fresh initialisation (see the
    report). The new model starts at ``num_timesteps`` 0 with empty rollout/replay buffers and
    fresh optimizer state; train it with ``learn(budget, reset_num_timesteps=True)``, so that
    learning-rate schedules run over the budget and SAC's ``learning_starts`` counts from 0.
    The returned model carries a :class:`TransferReport` (see :func:`transfer_report`).
    ``residual`` learns its correction with SAC: on a PPO policy it takes ``sac_hyperparameters``
    (the task's ``train.sac`` hyperparameters), on a SAC policy the pretrained ones. A strategy with
    ``source_steps`` fills the new model's replay buffer from ``source_env`` (the source domain).
    """
    strategy = _resolve(strategy, options)
    support = support_for(model)
    spaces_changed = not (model.observation_space == env.observation_space and model.action_space == env.action_space)
    describe = {
        "strategy": strategy.to_dict(),
        "algorithm": type(model).__name__,
        "seed": seed,
        "trains": strategy.trains,
        "spaces_changed": spaces_changed,
    }
    if isinstance(strategy, SysidFinetune):
        if spaces_changed:
            raise TransferError(
                f"{strategy.name} records the pretrained policy on the target, but the target's spaces differ: "
                f"observation {model.observation_space} → {env.observation_space}, "
                f"action {model.action_space} → {env.action_space}"
            )
        strategy = strategy.inner()
    if not strategy.trains:
        if spaces_changed:
            raise TransferError(
                f"{strategy.name} runs the pretrained policy as it is, but the target's spaces differ: "
                f"observation {model.observation_space} → {env.observation_space}, "
                f"action {model.action_space} → {env.action_space}"
            )
        setattr(model, REPORT_ATTRIBUTE, TransferReport(**describe, reused=tuple(layer_keys(model.policy))))
        return model
    if isinstance(strategy, Residual):
        if spaces_changed:
            raise TransferError(
                f"{strategy.name} corrects the pretrained policy's action, so the target's spaces must be the "
                f"source's: observation {model.observation_space} → {env.observation_space}, "
                f"action {model.action_space} → {env.action_space}"
            )
        adapted = _adapt_residual(model, env, strategy, seed, sac_hyperparameters, describe)
        return _warm_started(adapted, model, strategy, source_env, seed)
    support.check(model, strategy)
    overrides = support.overrides(model, strategy)
    adapted = support.build(model, env, seed=seed, overrides=overrides)
    policy = adapted.policy
    layers = tuple(layer_keys(policy))
    if not strategy.transfers:
        setattr(adapted, REPORT_ATTRIBUTE, TransferReport(**describe, reinitialised=layers, overrides=overrides))
        return adapted
    heads = _with_targets(support, select(layers, support.heads(policy)))
    reused, widened, mismatched = transplant(
        model.policy, policy, heads if strategy.reinits_heads else (), support.observation_layers(policy)
    )
    _check_inputs_transfer(strategy, support.observation_layers(policy), reused, widened, model, env)
    entropy = support.carry_state(model, adapted, strategy)
    owners = support.optimizer_owners(adapted)
    if isinstance(strategy, Freezing):
        base = _base(support, policy, layers, heads, strategy)
        freeze(policy, [layer for layer in base if layer in reused])
        for online, target in support.targets.items():
            hold_target(getattr(policy, online), getattr(policy, target))
        for name, owner in owners.items():
            owner.optimizer = without_frozen(owner.optimizer, name)
    if isinstance(strategy, L2SP):
        layer_of = layer_of_keys(policy)
        anchored = {id(p) for name, p in policy.named_parameters() if layer_of[name] in reused}
        for owner in owners.values():
            install_l2sp(owner.optimizer, strategy.alpha, anchored)
    report = TransferReport(
        **describe,
        reused=reused,
        widened=widened,
        reinitialised=tuple(layer for layer in layers if layer not in reused and layer not in widened),
        shape_mismatch=mismatched,
        frozen=_frozen_layers(policy),
        overrides=overrides,
        entropy=entropy,
    )
    setattr(adapted, REPORT_ATTRIBUTE, report)
    return _warm_started(adapted, model, strategy, source_env, seed)


def _check_inputs_transfer(strategy: Strategy, inputs: tuple[str, ...], reused: tuple[str, ...],
                           widened: tuple[str, ...], model: BaseAlgorithm, env: GymEnv) -> None:
    """Refuse a transfer in which no layer reading the observation carries over: another task, nothing to reuse.

    A target whose observation appends entries to the source's still transfers (those layers are
    widened); one whose observation is another vector altogether would get a mostly fresh model
    labelled as a transfer.
    """
    if inputs and not any(layer in reused or layer in widened for layer in inputs):
        raise TransferError(
            f"{strategy.name}: the target's observation {env.observation_space} is not the source's "
            f"{model.observation_space} (nor extends it), so no layer reading it would carry over and the "
            f"'transferred' model would be mostly re-initialised; is this the policy's task? Use scratch to train "
            f"from nothing"
        )


def _warm_started(adapted: BaseAlgorithm, pretrained: BaseAlgorithm, strategy: Strategy, source_env: gym.Env | None,
                  seed: int | None) -> BaseAlgorithm:
    """``adapted`` with its replay buffer warm-started as the strategy's ``source_steps`` say (none: as it is)."""
    steps = getattr(strategy, "source_steps", 0)
    if not steps:
        return adapted
    if source_env is None:
        raise TransferError(f"{strategy.name}: source_steps={steps} needs the source domain: pass source_env")
    warm_start_replay(adapted, pretrained, source_env, steps, seed)
    report = transfer_report(adapted)
    setattr(adapted, REPORT_ATTRIBUTE, replace(report, overrides={**report.overrides, "source_steps": steps}))
    return adapted


def _adapt_residual(
    model: BaseAlgorithm,
    env: GymEnv,
    strategy: Residual,
    seed: int | None,
    sac_hyperparameters: Mapping[str, Any] | None,
    describe: Mapping[str, Any],
) -> BaseAlgorithm:
    """A :class:`ResidualSAC` around the frozen pretrained policy, its critic carried over from a SAC policy."""
    if isinstance(model.policy, ResidualSACPolicy):
        raise TransferError("the pretrained model is already a residual policy; adapt its own base policy instead")
    spec = base_spec(model)
    support = ALGORITHMS[SAC]
    if isinstance(model, SAC):
        hyperparameters = support.hyperparameters(model)
    elif sac_hyperparameters is None:
        raise TransferError(
            f"{strategy.name} learns its correction with SAC; a {type(model).__name__} policy has no SAC "
            "hyperparameters: pass sac_hyperparameters (the task's train.sac section)"
        )
    else:
        hyperparameters = {**dict(sac_hyperparameters), "tensorboard_log": None}
    if strategy.reset_entropy and not isinstance(model, SAC):
        raise TransferError(f"reset_entropy: a {type(model).__name__} policy has no entropy coefficient to carry over")
    policy_kwargs = dict(hyperparameters.pop("policy_kwargs", None) or {})
    policy_kwargs.update(base=spec, residual_scale=strategy.scale, residual_log_std=strategy.log_std)
    adapted = ResidualSAC(ResidualSACPolicy, env, seed=seed, policy_kwargs=policy_kwargs,
                          critic_warmup=strategy.critic_warmup, anchor=strategy.anchor, **hyperparameters)
    support.check(adapted, strategy)
    overrides = support.overrides(adapted, strategy)
    for name, value in overrides.items():
        setattr(adapted, name, value)
    adapted._setup_lr_schedule()  # SB3 derives the schedule from learning_rate once, at setup
    policy = adapted.policy
    load_base_weights(model, policy.actor.base)
    reused: tuple[str, ...] = tuple(f"actor.base.{layer}" for layer in layer_keys(policy.actor.base))
    if isinstance(model, SAC):
        critic, _, _ = transplant(model.policy.critic, policy.critic)
        target, _, _ = transplant(model.policy.critic_target, policy.critic_target)
        reused += tuple(f"critic.{layer}" for layer in critic) + tuple(f"critic_target.{layer}" for layer in target)
    entropy = support.carry_state(model, adapted, strategy)
    layers = tuple(layer_keys(policy))
    report = TransferReport(
        **describe,
        reused=reused,
        reinitialised=tuple(layer for layer in layers if layer not in reused),
        frozen=_frozen_layers(policy),
        overrides=overrides,
        entropy=entropy,
    )
    setattr(adapted, REPORT_ATTRIBUTE, report)
    return adapted


def transfer_report(model: BaseAlgorithm) -> TransferReport | None:
    """The report adapt() left on ``model``, or None if adapt() did not produce it."""
    return getattr(model, REPORT_ATTRIBUTE, None)


def _resolve(strategy: Strategy | str, options: Mapping[str, Any]) -> Strategy:
    """The strategy object: built from a name and options, or given as is (then without options)."""
    if isinstance(strategy, Strategy):
        if options:
            raise TransferError(
                f"options {allowed(options)} given with a ready-made {strategy.name} strategy; "
                "pass the name instead, or put the options in the strategy"
            )
        return strategy
    return get_strategy(strategy, **options)


def _with_targets(support: AlgorithmSupport, layers: tuple[str, ...]) -> tuple[str, ...]:
    """``layers`` plus their copies in the Polyak target networks (critic.qf0.4 → critic_target.qf0.4)."""
    mirrored = [
        target + layer[len(online) :]
        for layer in layers
        for online, target in support.targets.items()
        if matches(layer, online)
    ]
    return layers + tuple(mirrored)


def _base(
    support: AlgorithmSupport,
    policy: Any,
    layers: tuple[str, ...],
    heads: tuple[str, ...],
    strategy: Freezing,
) -> tuple[str, ...]:
    """The layers to freeze: those the strategy's prefixes select, or every hidden layer but the last."""
    online = tuple(layer for layer in layers if not any(matches(layer, t) for t in support.targets.values()))
    if strategy.prefixes is not None:
        base = []
        for prefix in strategy.prefixes:
            selected = select(online, [prefix])
            if not selected:
                raise TransferError(
                    f"{strategy.name}: the prefix {prefix!r} matches no layer; layers: {allowed(online)} "
                    "(target networks follow the network they copy)"
                )
            base.extend(layer for layer in selected if layer not in base)
        clash = [layer for layer in base if layer in heads] if strategy.reinits_heads else []
        if clash:
            raise TransferError(f"{strategy.name}: the prefixes select heads it re-initialises: {allowed(clash)}")
        return tuple(base)
    base = []
    for trunk in support.trunks(policy):
        hidden = [layer for layer in select(online, trunk) if layer not in heads]
        base.extend(layer for layer in hidden[:-1] if layer not in base)
    if not base and not strategy.reinits_heads:
        raise TransferError(
            f"{strategy.name}: no base to freeze, every network has a single hidden layer; "
            f"name the modules to freeze with prefixes=[...] (layers: {allowed(online)})"
        )
    return tuple(base)


def _frozen_layers(policy: Any) -> tuple[str, ...]:
    """The layers all of whose parameters have ``requires_grad`` off."""
    layer_of = layer_of_keys(policy)
    trainable: dict[str, bool] = {}
    for name, parameter in policy.named_parameters():
        layer = layer_of[name]
        trainable[layer] = trainable.get(layer, False) or parameter.requires_grad
    return tuple(layer for layer, any_trainable in trainable.items() if not any_trainable)
