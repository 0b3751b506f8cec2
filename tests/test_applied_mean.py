"""The applied mean: the action a clipped Gaussian policy applies on average, in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim2real import load_policy, make_env
from sim2real.applied_mean import AppliedMeanPolicy, clipped_gaussian_mean
from sim2real.errors import Sim2RealError


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (0.95, 0.9), (1.6, 0.5), (-1.3, 2.0), (0.3, 0.05)])
def test_the_closed_form_is_the_average_of_clipped_samples(mean: float, std: float):
    samples = np.random.default_rng(0).normal(mean, std, 400_000)
    expected = np.clip(samples, -1.0, 1.0).mean()
    closed = clipped_gaussian_mean(np.array([mean]), np.array([std]), np.array([-1.0]), np.array([1.0]))[0]
    assert closed == pytest.approx(expected, abs=0.005)


def test_a_narrow_gaussian_applies_its_clipped_mean():
    means = np.array([-1.5, -0.4, 0.0, 0.7, 2.0])
    closed = clipped_gaussian_mean(means, np.full(5, 1e-6), np.full(5, -1.0), np.full(5, 1.0))
    assert closed == pytest.approx(np.clip(means, -1.0, 1.0), abs=1e-6)


def test_a_wide_policy_at_its_bound_applies_less_than_sb3s_deterministic_action():
    env = make_env("driving", "truck")
    model = load_policy("driving-ppo-nominal", env)
    observation, _ = env.reset(seed=0)
    with torch.no_grad():
        model.policy.log_std.fill_(np.log(0.9))
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.fill_(1.5)  # every mean at 1.5, beyond the upper bound
    deterministic, _ = model.predict(observation, deterministic=True)
    applied, _ = AppliedMeanPolicy(model).predict(observation)
    batch, _ = AppliedMeanPolicy(model).predict(np.stack([observation, observation]))
    env.close()
    assert applied.shape == deterministic.shape == (2,) and batch.shape == (2, 2)
    assert np.all(deterministic == 1.0)  # SB3 clips the mean to the bound
    assert applied == pytest.approx([0.837, 0.837], abs=0.005)  # the samples it applies average well inside
    assert batch[0] == pytest.approx(applied)


def test_a_policy_without_a_gaussian_is_refused_naming_what_it_has():
    model = load_policy("grasping-sac-nominal")
    with pytest.raises(Sim2RealError, match=r"needs a diagonal Gaussian policy on a Box action space .*got "):
        AppliedMeanPolicy(model)
