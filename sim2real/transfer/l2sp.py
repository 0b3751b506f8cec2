"""L2-SP: pull trainable weights toward their pretrained values through an optimizer step pre-hook.

The hook adds the gradient of alpha·‖θ − θ₀‖², that is 2·alpha·(θ − θ₀), to each anchored
parameter's gradient just before the optimizer steps, so SB3's own ``train()`` runs unchanged.
SB3 clips gradients before stepping, so the penalty's gradient is not clipped.
"""

from __future__ import annotations

from collections.abc import Collection

import torch


class L2SPPenalty:
    """Optimizer step pre-hook adding 2·alpha·(θ − θ₀) to the gradient of every anchored parameter."""

    def __init__(self, alpha: float, anchors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.alpha = alpha
        self.anchors = anchors

    def __call__(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """Add the penalty's gradient before ``optimizer.step()`` runs."""
        with torch.no_grad():
            for parameter, anchor in self.anchors:
                pull = (parameter - anchor).mul_(2.0 * self.alpha)
                if parameter.grad is None:
                    parameter.grad = pull
                else:
                    parameter.grad.add_(pull)

    def distance(self) -> float:
        """‖θ − θ₀‖ over the anchored parameters: how far training has moved them."""
        with torch.no_grad():
            squares = sum(float((p - a).pow(2).sum()) for p, a in self.anchors)
        return squares**0.5


def install_l2sp(optimizer: torch.optim.Optimizer, alpha: float, anchored: Collection[int]) -> L2SPPenalty:
    """Anchor the optimizer's parameters whose ``id`` is in ``anchored`` at their current values."""
    anchors = [
        (p, p.detach().clone()) for group in optimizer.param_groups for p in group["params"] if id(p) in anchored
    ]
    penalty = L2SPPenalty(alpha, anchors)
    optimizer.register_step_pre_hook(penalty)
    return penalty
