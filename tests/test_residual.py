"""Residual SAC: starts exactly at the pretrained policy, keeps it frozen, learns the correction, saves and loads."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from test_transfer import TINY_PPO, TINY_SAC, ToyEnv, one_thread, pendulum  # noqa: F401 - one_thread: autouse

from sim2real.transfer import TransferError, adapt, get_strategy, transfer_report
from sim2real.transfer.residual import ResidualSAC, ResidualSACPolicy

SAC_HYPERPARAMETERS = {**TINY_SAC, "policy_kwargs": {"net_arch": [16, 16]}}


@pytest.fixture(scope="module")
def ppo() -> PPO:
    return PPO("MlpPolicy", pendulum(), policy_kwargs={"net_arch": [16, 16]}, seed=0, **TINY_PPO).learn(128)


@pytest.fixture(scope="module")
def sac() -> SAC:
    return SAC("MlpPolicy", pendulum(), policy_kwargs={"net_arch": [16, 16]}, seed=0, **TINY_SAC).learn(150)


def observations(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 3)).astype(np.float32)


def base_state(model: ResidualSAC) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.policy.actor.base.state_dict().items()}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_the_residual_policy_starts_exactly_at_the_pretrained_one(algo, request):
    pretrained = request.getfixturevalue(algo)
    residual = adapt(pretrained, pendulum(), "residual", seed=1, sac_hyperparameters=SAC_HYPERPARAMETERS)
    assert isinstance(residual, ResidualSAC) and isinstance(residual.policy, ResidualSACPolicy)
    obs = observations()
    expected, _ = pretrained.predict(obs, deterministic=True)
    got, _ = residual.predict(obs, deterministic=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_the_base_stays_bitwise_frozen_and_out_of_every_optimizer(algo, request):
    pretrained = request.getfixturevalue(algo)
    residual = adapt(pretrained, pendulum(), "residual", seed=1, sac_hyperparameters=SAC_HYPERPARAMETERS,
                     critic_warmup=0)
    before = base_state(residual)
    mu_before = residual.policy.actor.mu.weight.clone()
    residual.learn(200)
    after = residual.policy.actor.base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(mu_before, residual.policy.actor.mu.weight), "the correction did not learn"
    base_ids = {id(p) for p in residual.policy.actor.base.parameters()}
    optimized = {id(p) for owner in (residual.actor, residual.critic) for g in owner.optimizer.param_groups
                 for p in g["params"]}
    assert not base_ids & optimized
    report = transfer_report(residual)
    assert report.frozen == ("actor.base.net.0", "actor.base.net.2", "actor.base.net.4")
    assert "actor.mu" in report.reinitialised
    assert report.entropy.startswith("carried over" if algo == "sac" else "learned from its initial value")


def test_a_sac_policy_carries_its_critic_and_entropy_coefficient(sac):
    residual = adapt(sac, pendulum(), "residual", seed=1)
    for online, target in (("critic", residual.critic), ("critic_target", residual.critic_target)):
        source = getattr(sac.policy, online).state_dict()
        assert all(torch.equal(source[k], v) for k, v in target.state_dict().items()), online
    assert torch.equal(residual.log_ent_coef, sac.log_ent_coef)
    assert transfer_report(residual).entropy.startswith("carried over at ")
    reset = adapt(sac, pendulum(), "residual", reset_entropy=True)
    assert transfer_report(reset).entropy.startswith("reset to its initial value")
    assert "critic.qf0.0" in transfer_report(residual).reused


def test_the_critic_warms_up_while_the_actor_holds_still(sac):
    residual = adapt(sac, pendulum(), "residual", seed=1, critic_warmup=120, learning_starts=20)
    actor = {k: v.clone() for k, v in residual.actor.state_dict().items()}
    critic = {k: v.clone() for k, v in residual.critic.state_dict().items()}
    residual.learn(120)
    assert all(torch.equal(actor[k], v) for k, v in residual.actor.state_dict().items())
    assert not all(torch.equal(critic[k], v) for k, v in residual.critic.state_dict().items())
    residual.learn(60, reset_num_timesteps=False)
    assert not torch.equal(actor["mu.weight"], residual.actor.mu.weight)


def trained_twice(residual: ResidualSAC, tmp_path, steps: int = 6) -> tuple[ResidualSAC, ResidualSAC]:
    """Two copies of ``residual``, one trained by ``steps`` updates of our SAC update, one by SB3's, on equal draws."""
    residual.save(tmp_path / "residual.zip")
    copies = []
    for update in (ResidualSAC.train, SAC.train):
        model = ResidualSAC.load(tmp_path / "residual.zip", env=pendulum())
        model.replay_buffer = copy.deepcopy(residual.replay_buffer)
        model.set_logger(residual.logger)
        torch.manual_seed(5)
        np.random.seed(5)
        update(model, steps, 32)
        copies.append(model)
    return copies[0], copies[1]


def test_its_sac_update_is_sb3s_when_there_is_no_anchor(sac, tmp_path):
    residual = adapt(sac, pendulum(), "residual", seed=1, critic_warmup=0, learning_starts=20).learn(80)
    ours, sb3 = trained_twice(residual, tmp_path)
    before = residual.policy.state_dict()
    for key, value in ours.policy.state_dict().items():
        assert torch.equal(value, sb3.policy.state_dict()[key]), key
    assert not torch.equal(before["actor.mu.weight"], ours.policy.state_dict()["actor.mu.weight"])
    assert torch.equal(ours.log_ent_coef, sb3.log_ent_coef)


def test_the_anchor_holds_the_action_near_the_pretrained_one(ppo):
    """Same seed, same target, same steps: the anchored correction stays several times smaller."""

    def correction_after_training(anchor: float) -> float:
        residual = adapt(ppo, pendulum(), "residual", seed=2, sac_hyperparameters=SAC_HYPERPARAMETERS,
                         critic_warmup=0, learning_starts=20, anchor=anchor)
        residual.learn(300)
        obs = torch.as_tensor(observations(256))
        with torch.no_grad():
            _, _, deviation = residual.actor.action_log_prob_deviation(obs)
        return float(deviation.pow(2).mean().sqrt())

    free, anchored = correction_after_training(0.0), correction_after_training(2.0)
    assert free > 0.03 and anchored < free / 3, (free, anchored)
    assert "anchored to the pretrained action (behaviour cloning, 2·mean|Q|)" in get_strategy(
        "residual", anchor=2.0).describe()


def test_it_acts_around_the_pretrained_policy_from_the_first_step(ppo):
    """No uniform random warm-up: with a tiny exploration every early action is the base action."""
    residual = adapt(ppo, pendulum(), "residual", seed=1, sac_hyperparameters=SAC_HYPERPARAMETERS, log_std=-5.0,
                     learning_starts=100)
    residual.learn(50)
    buffer = residual.replay_buffer
    obs = buffer.observations[:50, 0]
    taken = residual.policy.unscale_action(buffer.actions[:50, 0])
    expected, _ = ppo.predict(obs, deterministic=True)
    assert np.abs(taken - expected).max() < 0.1 * 2.0  # correction std e^-5 before tanh: all but exact


def test_it_learns_the_correction_a_wrong_base_needs():
    """The base is trained on another target (action = −obs); the residual recovers action = obs."""
    env = ToyEnv()
    flipped = SAC("MlpPolicy", env, policy_kwargs={"net_arch": [32, 32]}, seed=0, **TINY_SAC)
    with torch.no_grad():  # a base that answers −obs[0]: the worst constant-free mistake
        for layer in flipped.policy.actor.latent_pi:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_(), layer.bias.zero_()
        flipped.policy.actor.mu.weight.zero_()
        flipped.policy.actor.mu.bias.zero_()
    residual = adapt(flipped, env, "residual", seed=0, utd=2, critic_warmup=200)

    def mean_reward(model) -> float:
        obs = env.np_random.uniform(-1, 1, (256, 3)).astype(np.float32)
        action, _ = model.predict(obs, deterministic=True)
        return float(-np.mean((action[:, 0] - obs[:, 0]) ** 2))

    env.reset(seed=0)
    start = mean_reward(residual)
    residual.learn(1_500)
    assert start < -0.25 and mean_reward(residual) > -0.05, (start, mean_reward(residual))


def test_a_residual_model_saves_and_loads_with_sb3(ppo, tmp_path):
    residual = adapt(ppo, pendulum(), "residual", seed=1, sac_hyperparameters=SAC_HYPERPARAMETERS).learn(100)
    residual.save(tmp_path / "residual.zip")
    loaded = SAC.load(tmp_path / "residual.zip")
    obs = observations()
    expected, _ = residual.predict(obs, deterministic=True)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)


def test_utd_sets_sac_gradient_steps_and_is_recorded(sac):
    finetuned = adapt(sac, pendulum(), "finetune", utd=4)
    assert finetuned.gradient_steps == 4
    assert transfer_report(finetuned).overrides["gradient_steps"] == 4
    assert adapt(sac, pendulum(), "residual", utd=3).gradient_steps == 3
    assert adapt(sac, pendulum(), "residual").gradient_steps == 2  # the residual's default update-to-data ratio


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"utd": 0}, r"utd \(gradient steps per target step, SAC\) must be an integer >= 1"),
        ({"utd": -2}, "utd .* must be an integer >= 1"),
        ({"scale": 0.0}, r"scale must be a number in \(0, 2\]"),
        ({"scale": 3.0}, r"scale must be a number in \(0, 2\]"),
        ({"log_std": float("nan")}, r"log_std must be a number in \[-5, 2\]"),
        ({"critic_warmup": -1}, "critic_warmup must be an integer >= 0"),
        ({"anchor": -0.1}, r"anchor must be a finite number >= 0 \(the behaviour-cloning weight"),
        ({"anchor": float("inf")}, "anchor must be a finite number >= 0"),
    ],
)
def test_bad_residual_options_are_clear_errors(options, message):
    with pytest.raises(TransferError, match=message):
        get_strategy("residual", **options)


def test_misapplied_options_fail_before_any_training(ppo):
    with pytest.raises(TransferError, match="utd .* applies to off-policy algorithms .*, not to PPO"):
        adapt(ppo, pendulum(), "finetune", utd=2)
    with pytest.raises(TransferError, match="pass sac_hyperparameters"):
        adapt(ppo, pendulum(), "residual")
    with pytest.raises(TransferError, match="reset_entropy: a PPO policy has no entropy coefficient"):
        adapt(ppo, pendulum(), "residual", reset_entropy=True, sac_hyperparameters=SAC_HYPERPARAMETERS)
    wider = ToyEnv(obs_dim=3, act_dim=2)
    with pytest.raises(TransferError, match="residual corrects the pretrained policy's action, so the target's spaces"):
        adapt(ppo, wider, "residual", sac_hyperparameters=SAC_HYPERPARAMETERS)


def test_the_replay_buffer_warm_starts_with_source_transitions_of_the_pretrained_policy(ppo, sac):
    source = pendulum()
    warmed = adapt(ppo, pendulum(), "residual", seed=3, sac_hyperparameters=SAC_HYPERPARAMETERS, source_steps=300,
                   source_env=source)
    buffer = warmed.replay_buffer
    assert buffer.size() == 300 and transfer_report(warmed).overrides["source_steps"] == 300
    actions = warmed.policy.unscale_action(buffer.actions[:300, 0])
    stochastic = np.abs(actions - ppo.predict(buffer.observations[:300, 0], deterministic=True)[0]).max()
    assert stochastic > 0 and np.all(np.abs(buffer.actions[:300]) <= 1.0)
    assert buffer.dones[:300].sum() == 1  # Pendulum's 200-step episodes: one ended inside the 300 steps
    finetuned = adapt(sac, pendulum(), "finetune", source_steps=50, source_env=source)
    assert finetuned.replay_buffer.size() == 50
    finetuned.learn(100)
    assert finetuned.replay_buffer.size() == 150


def test_a_warm_start_needs_an_off_policy_learner_and_the_source(ppo, sac):
    with pytest.raises(TransferError, match="source_steps .* applies to off-policy algorithms .*, not to PPO"):
        adapt(ppo, pendulum(), "finetune", source_steps=10, source_env=pendulum())
    with pytest.raises(TransferError, match="source_steps=10 needs the source domain: pass source_env"):
        adapt(sac, pendulum(), "residual", source_steps=10)
    with pytest.raises(TransferError, match="source_steps .* must be an integer >= 0"):
        get_strategy("finetune", source_steps=-5)
