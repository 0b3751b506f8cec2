"""Optimizers without the frozen parameters, whose saved state still fits a model with none frozen.

SB3 saves optimizer state inside the model zip and loads it into a fresh model whose optimizers
hold every parameter. The rebuilt optimizer therefore saves (and loads) through torch's
state-dict hooks in the layout of the original one: frozen parameters keep their index and
simply have no state, so ``PPO.load``/``SAC.load`` and ``set_parameters`` work on adapted models.
"""

from __future__ import annotations

from typing import Any

import torch

from sim2real.transfer.errors import TransferError


def without_frozen(optimizer: torch.optim.Optimizer, owner: str) -> torch.optim.Optimizer:
    """A new optimizer of the same class and settings over only the trainable parameters, with fresh state.

    SB3 sets the learning rate of every param group from ``model.lr_schedule`` at each update,
    so the schedule carries over unchanged.
    """
    groups = []
    for group in optimizer.param_groups:
        trainable = [p for p in group["params"] if p.requires_grad]
        if trainable:
            groups.append({**_options(group), "params": trainable})
    if not groups:
        raise TransferError(f"every parameter of the {owner} would be frozen; leave at least one layer trainable")
    rebuilt = type(optimizer)(groups, **optimizer.defaults)
    layout = FullLayout(optimizer.param_groups)
    rebuilt.register_state_dict_post_hook(layout.save)
    rebuilt.register_load_state_dict_pre_hook(layout.load)
    return rebuilt


class FullLayout:
    """State-dict hooks mapping an optimizer over some parameters to the layout of one over all of them."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.groups = [{**_options(group), "params": list(group["params"])} for group in groups]

    def save(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Re-index a state dict of ``optimizer`` as if it held every parameter of the original groups."""
        held = _flat(optimizer.param_groups)
        full_index = {id(p): i for i, p in enumerate(_flat(self.groups))}
        group_of = {id(p): k for k, group in enumerate(optimizer.param_groups) for p in group["params"]}
        state = {full_index[id(held[i])]: value for i, value in state_dict["state"].items()}
        groups, start = [], 0
        for group in self.groups:
            live = next((group_of[id(p)] for p in group["params"] if id(p) in group_of), None)
            options = _options(state_dict["param_groups"][live]) if live is not None else _options(group)
            groups.append({**options, "params": list(range(start, start + len(group["params"])))})
            start += len(group["params"])
        return {"state": state, "param_groups": groups}

    def load(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Re-index a full-layout state dict for ``optimizer``; any other state dict passes unchanged."""
        full = _flat(self.groups)
        if sum(len(group["params"]) for group in state_dict["param_groups"]) != len(full):
            return state_dict
        held_index = {id(p): i for i, p in enumerate(_flat(optimizer.param_groups))}
        original_of = {id(p): k for k, group in enumerate(self.groups) for p in group["params"]}
        state = {
            held_index[id(full[i])]: value for i, value in state_dict["state"].items() if id(full[i]) in held_index
        }
        groups = [
            {
                **_options(state_dict["param_groups"][original_of[id(group["params"][0])]]),
                "params": [held_index[id(p)] for p in group["params"]],
            }
            for group in optimizer.param_groups
        ]
        return {"state": state, "param_groups": groups}


def _options(group: dict[str, Any]) -> dict[str, Any]:
    """A param group's settings, without its parameters."""
    return {key: value for key, value in group.items() if key != "params"}


def _flat(groups: list[dict[str, Any]]) -> list[Any]:
    """Every parameter of the groups, in the order torch numbers them in a state dict."""
    return [p for group in groups for p in group["params"]]
