"""Freezing layers: requires_grad off, and out of SB3's Polyak target updates."""

from __future__ import annotations

from collections.abc import Collection, Iterator

import torch
from torch import nn

from sim2real.transfer.layers import layer_of_keys


def freeze(module: nn.Module, layers: Collection[str]) -> None:
    """Turn ``requires_grad`` off for every parameter of the named layers of ``module``."""
    owners = layer_of_keys(module)
    for name, parameter in module.named_parameters():
        if owners[name] in layers:
            parameter.requires_grad_(False)


class ParameterSubset:
    """Stands in for a module's ``parameters()`` and yields only the named parameters, in order.

    SB3 Polyak-averages ``critic.parameters()`` into ``critic_target.parameters()`` whatever
    their ``requires_grad``; installed on both, it keeps frozen pairs out of that update.
    Everything that walks a module through ``named_parameters()``, ``state_dict()`` or a parent
    module still sees every parameter.
    """

    def __init__(self, module: nn.Module, names: tuple[str, ...]) -> None:
        self.module = module
        self.names = names

    def __call__(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Yield the named parameters of the module."""
        parameters = dict(self.module.named_parameters())
        return iter([parameters[name] for name in self.names])


def hold_target(online: nn.Module, target: nn.Module) -> None:
    """Freeze the target copy of every frozen parameter of ``online``, equal to it and out of Polyak updates.

    A frozen layer's target copy is set to the online values: the fixed point that Polyak
    averaging would reach anyway, so the target stays a lagged copy of the critic it mirrors.
    """
    online_parameters = dict(online.named_parameters())
    target_parameters = dict(target.named_parameters())
    frozen = [name for name, p in online_parameters.items() if not p.requires_grad]
    if not frozen:
        return
    with torch.no_grad():
        for name in frozen:
            target_parameters[name].copy_(online_parameters[name])
            target_parameters[name].requires_grad_(False)
    trainable = tuple(name for name, p in online_parameters.items() if p.requires_grad)
    online.parameters = ParameterSubset(online, trainable)  # type: ignore[method-assign]
    target.parameters = ParameterSubset(target, trainable)  # type: ignore[method-assign]
