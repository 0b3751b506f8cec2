"""Layers of a policy by module name: listing them, selecting them by prefix, copying them across models.

A *layer* is a leaf module that holds parameters or buffers (``mlp_extractor.policy_net.0``,
``actor.mu``), or a parameter held directly by a container module (PPO's ``log_std``). Layers
are the unit that transfer reuses, re-initialises and freezes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
from torch import nn


def layer_of_keys(module: nn.Module) -> dict[str, str]:
    """Map every state-dict key of ``module`` to the name of the layer that holds it, in order."""
    containers = {
        name for name, child in module.named_modules(remove_duplicate=False) if next(child.children(), None) is not None
    }
    layers = {}
    for key in module.state_dict():
        owner = key.rpartition(".")[0]
        layers[key] = key if owner in containers else owner
    return layers


def layer_keys(module: nn.Module) -> dict[str, tuple[str, ...]]:
    """Map every layer of ``module`` to its state-dict keys, layers in registration order."""
    grouped: dict[str, list[str]] = {}
    for key, layer in layer_of_keys(module).items():
        grouped.setdefault(layer, []).append(key)
    return {layer: tuple(keys) for layer, keys in grouped.items()}


def matches(layer: str, prefix: str) -> bool:
    """True when ``layer`` is the module ``prefix`` or lies inside it (a dotted-name prefix)."""
    return layer == prefix or layer.startswith(prefix + ".")


def select(layers: Iterable[str], prefixes: Iterable[str]) -> tuple[str, ...]:
    """The layers, in their order, that any of ``prefixes`` matches."""
    prefixes = tuple(prefixes)
    return tuple(layer for layer in layers if any(matches(layer, p) for p in prefixes))


def transplant(
    source: nn.Module, target: nn.Module, keep_fresh: Collection[str] = (), widenable: Collection[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Copy into ``target`` every layer of ``source`` with the same name and tensor shapes.

    A layer named in ``widenable`` (one reading the observation alone) that differs only in taking
    more inputs (the target's observation has entries the source's lacked, appended after them)
    is *widened*: the source's weights fill the leading input columns and the new columns start
    at zero, so the layer computes what the source's did until training finds a use for the new
    entries. Layers named in ``keep_fresh`` keep the
    target's own initialisation. Returns the layers reused whole, those widened, and those that did
    not fit (missing in the source, or another shape differs).
    """
    source_state = source.state_dict()
    target_state = target.state_dict()
    source_layers = layer_keys(source)
    reused: list[str] = []
    widened: list[str] = []
    mismatched: list[str] = []
    copied = {}
    for layer, keys in layer_keys(target).items():
        if layer in keep_fresh:
            continue
        if source_layers.get(layer) != keys:
            mismatched.append(layer)
        elif all(source_state[key].shape == target_state[key].shape for key in keys):
            reused.append(layer)
            copied.update({key: source_state[key] for key in keys})
        elif layer in widenable and all(_widens(source_state[key], target_state[key]) for key in keys):
            widened.append(layer)
            for key in keys:
                grown = torch.zeros_like(target_state[key])
                grown[..., : source_state[key].shape[-1]] = source_state[key]
                copied[key] = grown
        else:
            mismatched.append(layer)
    target.load_state_dict(copied, strict=False)
    return tuple(reused), tuple(widened), tuple(mismatched)


def _widens(source: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``target`` is ``source`` with more input columns (a linear layer's weight), or the same shape."""
    if source.shape == target.shape:
        return True
    return source.dim() == 2 and source.shape[0] == target.shape[0] and source.shape[1] < target.shape[1]
