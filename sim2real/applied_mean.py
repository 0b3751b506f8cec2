"""The mean action a Gaussian policy applies when its samples are clipped to the action bounds.

SB3's PPO samples a ~ N(μ, σ²) and the env applies clip(a, low, high); its deterministic action is
clip(μ). With σ large and μ near a bound the two part ways: the applied actions average
E[clip(a)], well inside the bound, while clip(μ) sits on it. A policy can learn to rely on that
(on the truck it slows for the cargo through its noise), and then its deterministic curve
collapses while its sampled one holds (README, "Curves that do not hold still").
:class:`AppliedMeanPolicy` acts with E[clip(a)], in closed form per action dimension, for
X ~ N(μ, σ²), α = (low − μ)/σ, β = (high − μ)/σ:

    E[clip(X, low, high)] = low·Φ(α) + high·(1 − Φ(β)) + μ·(Φ(β) − Φ(α)) + σ·(φ(α) − φ(β))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import DiagGaussianDistribution

from sim2real.errors import Sim2RealError


def clipped_gaussian_mean(mean: np.ndarray, std: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """E[clip(X, low, high)] for X ~ N(mean, std²), elementwise (std > 0)."""
    alpha, beta = (low - mean) / std, (high - mean) / std
    return (low * ndtr(alpha) + high * (1 - ndtr(beta)) + mean * (ndtr(beta) - ndtr(alpha))
            + std * (_normal_density(alpha) - _normal_density(beta)))


def _normal_density(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


class AppliedMeanPolicy:
    """An SB3 model with a diagonal Gaussian policy, acting with the mean of the actions the env applies.

    ``predict`` takes SB3's arguments; ``deterministic=False`` samples as the model does.
    """

    def __init__(self, model: BaseAlgorithm) -> None:
        space = model.action_space
        distribution = getattr(model.policy, "action_dist", None)
        if not isinstance(distribution, DiagGaussianDistribution) or not hasattr(space, "low"):
            raise Sim2RealError(f"the applied mean needs a diagonal Gaussian policy on a Box action space (PPO or "
                                f"A2C without gSDE), got {type(distribution).__name__} on {space}")
        self.model = model
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The applied mean action (or, not deterministic, a sample as the model's own ``predict``)."""
        if not deterministic:
            return self.model.predict(observation, state, episode_start, deterministic=False)
        policy = self.model.policy
        tensor, vectorized = policy.obs_to_tensor(observation)
        with torch.no_grad():
            gaussian = policy.get_distribution(tensor).distribution
            mean, std = gaussian.mean.cpu().numpy(), gaussian.stddev.cpu().numpy()
        actions = clipped_gaussian_mean(mean.astype(np.float64), std.astype(np.float64), self.low, self.high)
        actions = actions.astype(self.model.action_space.dtype).reshape((-1, *self.model.action_space.shape))
        return (actions if vectorized else actions[0]), state
