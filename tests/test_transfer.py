"""Transfer strategies: freezing is exact, heads are re-initialised, L2-SP anchors, spaces may change."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO, SAC

from sim2real.errors import Sim2RealError
from sim2real.transfer import (
    ALGORITHMS,
    STRATEGIES,
    FineTune,
    TransferError,
    adapt,
    get_strategy,
    transfer_report,
)
from sim2real.transfer.l2sp import install_l2sp
from sim2real.transfer.strategies import parse_strategy

TINY_PPO = {"n_steps": 64, "batch_size": 32, "n_epochs": 2}
TINY_SAC = {"buffer_size": 2_000, "learning_starts": 50, "batch_size": 32}


class ToyEnv(gym.Env):
    """Match the action to the first observation entries: any obs/action size, 16 steps an episode."""

    def __init__(self, obs_dim: int = 3, act_dim: int = 1) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self._act_dim = act_dim
        self._t = 0
        self._obs = np.zeros(obs_dim, np.float32)

    def _observe(self) -> np.ndarray:
        self._obs = self.np_random.uniform(-1, 1, self.observation_space.shape).astype(np.float32)
        return self._obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._observe(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -float(np.sum((action - self._obs[: self._act_dim]) ** 2))
        self._t += 1
        return self._observe(), reward, False, self._t >= 16, {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Keep torch to one thread: the machine is small and shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pendulum() -> gym.Env:
    return gym.make("Pendulum-v1")


@pytest.fixture(scope="module")
def ppo(one_thread) -> PPO:
    model = PPO("MlpPolicy", pendulum(), policy_kwargs={"net_arch": [16, 16]}, seed=0, **TINY_PPO)
    return model.learn(128)


@pytest.fixture(scope="module")
def sac(one_thread) -> SAC:
    model = SAC("MlpPolicy", pendulum(), policy_kwargs={"net_arch": [16, 16]}, seed=0, **TINY_SAC)
    return model.learn(150)


def state(model) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.policy.state_dict().items()}


def keys_of(layers, model) -> list[str]:
    return [key for key in model.policy.state_dict() if any(key.startswith(layer + ".") for layer in layers)]


def optimized_ids(model) -> set[int]:
    owners = ALGORITHMS[type(model)].optimizer_owners(model).values()
    return {id(p) for owner in owners for group in owner.optimizer.param_groups for p in group["params"]}


def distance(model, reference: dict[str, torch.Tensor], keys) -> float:
    now = model.policy.state_dict()
    return math.sqrt(sum(float((now[k] - reference[k]).pow(2).sum()) for k in keys))


# --- strategies as data ---------------------------------------------------------------------------------


def test_registry_lists_every_strategy_with_a_description_and_a_record():
    assert set(STRATEGIES) == {"zero_shot", "scratch", "finetune", "freeze_base", "reinit_head", "l2sp",
                               "residual", "sysid_finetune"}
    for name in STRATEGIES:
        strategy = get_strategy(name)
        assert strategy.name == name
        assert strategy.describe() and "\n" not in strategy.describe()
        assert json.loads(json.dumps(strategy.to_dict()))["name"] == name
    assert not get_strategy("zero_shot").trains
    assert [name for name in STRATEGIES if get_strategy(name).transductive] == ["sysid_finetune"]
    assert get_strategy("freeze_base", prefixes=["actor"]).to_dict()["prefixes"] == ["actor"]
    assert get_strategy("l2sp", alpha=0.5).to_dict()["alpha"] == 0.5


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("distill", {}, "known strategies: zero_shot, scratch, finetune"),
        ("finetune", {"lr": 0.1}, "its options: lr_scale"),
        ("finetune", {"lr_scale": 0.0}, "lr_scale must be a finite number > 0"),
        ("freeze_base", {"lr_scale": -1.0}, "lr_scale must be a finite number > 0"),
        ("finetune", {"lr_scale": float("nan")}, "lr_scale must be a finite number > 0"),
        ("l2sp", {"alpha": -0.1}, "alpha must be a finite number >= 0"),
        ("finetune", {"learning_starts": -1}, "learning_starts must be an integer >= 0"),
        ("freeze_base", {"prefixes": []}, "prefixes must be a non-empty list"),
    ],
)
def test_bad_strategy_or_option_is_a_clear_error(name, options, message):
    with pytest.raises(TransferError, match=message) as caught:
        get_strategy(name, **options)
    assert isinstance(caught.value, Sim2RealError)


def test_strategies_with_options_parse_from_the_command_line():
    assert parse_strategy("residual:utd=4:critic_warmup=2000:log_std=-1.5") == get_strategy(
        "residual", utd=4, critic_warmup=2000, log_std=-1.5)
    assert parse_strategy(" finetune ") == get_strategy("finetune")
    assert parse_strategy("freeze_base:prefixes=actor.latent_pi+critic").prefixes == ("actor.latent_pi", "critic")
    assert parse_strategy("finetune:learning_starts=null").learning_starts is None
    with pytest.raises(TransferError, match="option 'utd' given twice"):
        parse_strategy("residual:utd=2:utd=3")
    with pytest.raises(TransferError, match="has no option gamma; its options: lr_scale"):
        parse_strategy("residual:gamma=0.9")
    with pytest.raises(TransferError, match="'=4' in 'residual:=4' is not option=value"):
        parse_strategy("residual:=4")


def test_unsupported_algorithm_names_the_supported_ones():
    model = A2C("MlpPolicy", pendulum(), n_steps=8, policy_kwargs={"net_arch": [16]})
    with pytest.raises(TransferError, match="supported algorithms: PPO, SAC"):
        adapt(model, pendulum(), "finetune")


def test_a_prefix_matching_no_module_lists_the_module_names(ppo):
    with pytest.raises(TransferError, match=r"'mlp_extractor.shared' matches no layer; layers: log_std, mlp_"):
        adapt(ppo, pendulum(), "freeze_base", prefixes=["mlp_extractor.shared"])


def test_options_for_another_algorithm_or_a_ready_strategy_are_errors(ppo):
    with pytest.raises(TransferError, match="learning_starts applies to off-policy algorithms"):
        adapt(ppo, pendulum(), "finetune", learning_starts=10)
    with pytest.raises(TransferError, match="reset_entropy needs a learned entropy coefficient"):
        adapt(ppo, pendulum(), "finetune", reset_entropy=True)
    with pytest.raises(TransferError, match="ready-made finetune strategy"):
        adapt(ppo, pendulum(), FineTune(), lr_scale=0.5)


def test_freeze_base_without_a_base_asks_for_prefixes():
    model = PPO("MlpPolicy", pendulum(), policy_kwargs={"net_arch": [16]}, seed=0, **TINY_PPO)
    with pytest.raises(TransferError, match="single hidden layer; name the modules"):
        adapt(model, pendulum(), "freeze_base")
    adapted = adapt(model, pendulum(), "freeze_base", prefixes=["mlp_extractor"])
    assert transfer_report(adapted).frozen == ("mlp_extractor.policy_net.0", "mlp_extractor.value_net.0")


# --- zero-shot and scratch ------------------------------------------------------------------------------


def test_zero_shot_returns_the_model_untouched(ppo):
    before = state(ppo)
    adapted = adapt(ppo, pendulum(), "zero_shot")
    assert adapted is ppo
    assert all(torch.equal(before[k], v) for k, v in adapted.policy.state_dict().items())
    report = transfer_report(adapted)
    assert not report.trains and report.frozen == () and report.reinitialised == ()
    with pytest.raises(TransferError, match="target's spaces differ"):
        adapt(ppo, ToyEnv(5, 1), "zero_shot")


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_scratch_has_fresh_weights_and_the_same_hyperparameters(algo, request):
    pretrained = request.getfixturevalue(algo)
    support = ALGORITHMS[type(pretrained)]
    fresh = adapt(pretrained, pendulum(), "scratch", seed=7)
    assert type(fresh) is type(pretrained) and fresh is not pretrained
    assert repr(support.hyperparameters(fresh)) == repr(support.hyperparameters(pretrained))
    assert fresh.policy_kwargs == pretrained.policy_kwargs and fresh.seed == 7
    old = pretrained.policy.state_dict()
    assert all(not torch.equal(old[k], v) for k, v in fresh.policy.state_dict().items() if v.numel() > 1)
    again = adapt(pretrained, pendulum(), "scratch", seed=7)
    assert all(torch.equal(v, again.policy.state_dict()[k]) for k, v in fresh.policy.state_dict().items())


@pytest.mark.parametrize("cls", [PPO, SAC])
def test_a_saved_and_loaded_model_adapts_with_its_hyperparameters(cls, tmp_path, request):
    pretrained = request.getfixturevalue(cls.__name__.lower())
    pretrained.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", device="cpu")
    support = ALGORITHMS[cls]
    adapted = adapt(loaded, pendulum(), "finetune", seed=1)
    assert repr(support.hyperparameters(adapt(loaded, pendulum(), "scratch"))) == repr(
        support.hyperparameters(pretrained)
    )
    assert all(torch.equal(v, adapted.policy.state_dict()[k]) for k, v in pretrained.policy.state_dict().items())


# --- freezing -------------------------------------------------------------------------------------------


def test_ppo_freeze_base_keeps_frozen_weights_bitwise_and_out_of_the_optimizer(ppo):
    pretrained = state(ppo)
    adapted = adapt(ppo, pendulum(), "freeze_base", seed=1)
    report = transfer_report(adapted)
    assert report.frozen == ("mlp_extractor.policy_net.0", "mlp_extractor.value_net.0")
    frozen = keys_of(report.frozen, adapted)
    parameters = dict(adapted.policy.named_parameters())
    assert all(not parameters[k].requires_grad and id(parameters[k]) not in optimized_ids(adapted) for k in frozen)
    adapted.learn(128)
    after = adapted.policy.state_dict()
    assert all(torch.equal(after[k], pretrained[k]) for k in frozen)
    trainable = [k for k in after if k not in frozen]
    assert all(not torch.equal(after[k], pretrained[k]) for k in trainable)
    assert all(torch.equal(v, pretrained[k]) for k, v in ppo.policy.state_dict().items())


def test_sac_freeze_base_keeps_critic_targets_frozen_too(sac):
    pretrained = state(sac)
    adapted = adapt(sac, pendulum(), "freeze_base", seed=1)
    report = transfer_report(adapted)
    assert set(report.frozen) == {
        "actor.latent_pi.0",
        "critic.qf0.0",
        "critic.qf1.0",
        "critic_target.qf0.0",
        "critic_target.qf1.0",
    }
    frozen = keys_of(report.frozen, adapted)
    parameters = dict(adapted.policy.named_parameters())
    assert all(not parameters[k].requires_grad and id(parameters[k]) not in optimized_ids(adapted) for k in frozen)
    synced = adapted.policy.state_dict()
    for key in keys_of(["critic.qf0.0", "critic.qf1.0"], adapted):
        assert torch.equal(synced[key.replace("critic.", "critic_target.", 1)], synced[key])
    synced = {k: v.clone() for k, v in synced.items()}
    adapted.learn(150)
    after = adapted.policy.state_dict()
    assert all(torch.equal(after[k], synced[k]) for k in frozen)
    assert all(torch.equal(after[k], pretrained[k]) for k in frozen if not k.startswith("critic_target."))
    assert all(not torch.equal(after[k], synced[k]) for k in after if k not in frozen)


@pytest.mark.parametrize("cls", [PPO, SAC])
def test_a_model_with_frozen_layers_saves_and_loads_with_plain_sb3(cls, tmp_path, request):
    adapted = adapt(request.getfixturevalue(cls.__name__.lower()), pendulum(), "freeze_base", seed=1)
    adapted.learn(64 if cls is PPO else 60)
    adapted.save(tmp_path / "adapted.zip")
    loaded = cls.load(tmp_path / "adapted.zip", env=pendulum(), device="cpu")
    assert all(torch.equal(v, loaded.policy.state_dict()[k]) for k, v in adapted.policy.state_dict().items())
    adapted.set_parameters(str(tmp_path / "adapted.zip"))
    loaded.learn(64 if cls is PPO else 60)


def test_reinit_head_re_initialises_heads_and_log_std(ppo, sac):
    pretrained = state(ppo)
    adapted = adapt(ppo, pendulum(), "reinit_head", seed=1)
    now = adapted.policy.state_dict()
    for key in ("action_net.weight", "value_net.weight", "log_std"):
        assert not torch.equal(now[key], pretrained[key])
    assert torch.equal(now["log_std"], torch.zeros(1))
    assert torch.equal(now["mlp_extractor.policy_net.2.weight"], pretrained["mlp_extractor.policy_net.2.weight"])
    assert transfer_report(adapted).frozen == ("mlp_extractor.policy_net.0", "mlp_extractor.value_net.0")

    pretrained = state(sac)
    adapted = adapt(sac, pendulum(), "reinit_head", seed=1)
    now = adapted.policy.state_dict()
    for key in ("actor.mu.weight", "actor.log_std.weight", "critic.qf0.4.weight", "critic.qf1.4.weight"):
        assert not torch.equal(now[key], pretrained[key])
    assert torch.equal(now["critic_target.qf0.4.weight"], now["critic.qf0.4.weight"])
    assert torch.equal(now["actor.latent_pi.2.weight"], pretrained["actor.latent_pi.2.weight"])
    adapted.learn(60)


# --- L2-SP ----------------------------------------------------------------------------------------------


def test_l2sp_hook_adds_the_penalty_gradient():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    install_l2sp(optimizer, alpha=0.5, anchored={id(weight)})
    with torch.no_grad():
        weight.add_(torch.tensor([1.0, 1.0]))
    weight.grad = torch.zeros(2)
    optimizer.step()
    assert torch.allclose(weight.detach(), torch.tensor([2.0, -1.0]) - 0.1 * 2 * 0.5 * torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize(("algo", "steps"), [("ppo", 256), ("sac", 150)])
def test_l2sp_stays_closer_to_the_pretrained_weights_than_finetune(algo, steps, request):
    pretrained = request.getfixturevalue(algo)
    reference = state(pretrained)
    trained = [k for k in reference if not k.startswith("critic_target.")]
    distances = {}
    for name, options in (("finetune", {}), ("l2sp", {"alpha": 10.0})):
        adapted = adapt(pretrained, pendulum(), name, seed=3, **options)
        adapted.learn(steps)
        distances[name] = distance(adapted, reference, trained)
    owners = ALGORITHMS[type(adapted)].optimizer_owners(adapted).values()
    assert all(owner.optimizer._optimizer_step_pre_hooks for owner in owners)
    assert 0 < distances["l2sp"] < 0.8 * distances["finetune"]


# --- options, spaces, determinism -----------------------------------------------------------------------


def test_lr_scale_scales_the_learning_rate_and_its_schedule(ppo):
    adapted = adapt(ppo, pendulum(), FineTune(lr_scale=0.5))
    assert adapted.learning_rate == pytest.approx(ppo.learning_rate * 0.5)
    scheduled = PPO("MlpPolicy", pendulum(), learning_rate=lambda p: 1e-3 * p, **TINY_PPO)
    adapted = adapt(scheduled, pendulum(), "finetune", lr_scale=0.5)
    assert adapted.lr_schedule(0.5) == pytest.approx(2.5e-4)


def test_sac_learning_starts_and_entropy_options(sac):
    assert adapt(sac, pendulum(), "finetune").learning_starts == 50
    assert adapt(sac, pendulum(), "finetune", learning_starts=20).learning_starts == 20
    assert adapt(sac, pendulum(), "scratch").learning_starts == 50
    kept = adapt(sac, pendulum(), "finetune")
    assert torch.equal(kept.log_ent_coef.detach(), sac.log_ent_coef.detach())
    reset = adapt(sac, pendulum(), "finetune", reset_entropy=True)
    assert torch.equal(reset.log_ent_coef.detach(), torch.zeros(1))
    fixed = SAC("MlpPolicy", pendulum(), ent_coef=0.1, policy_kwargs={"net_arch": [16]}, **TINY_SAC)
    with pytest.raises(TransferError, match=r"ent_coef=0\.1"):
        adapt(fixed, pendulum(), "finetune", reset_entropy=True)


def test_ppo_space_change_reuses_what_fits_and_freezes_only_reused_layers():
    source = PPO("MlpPolicy", ToyEnv(3, 1), policy_kwargs={"net_arch": [16, 16, 16]}, seed=0, **TINY_PPO)
    pretrained = state(source)
    adapted = adapt(source, ToyEnv(5, 2), "freeze_base", seed=1)
    report = transfer_report(adapted)
    assert report.spaces_changed
    assert set(report.shape_mismatch) == {"log_std", "action_net"}
    assert set(report.widened) == {"mlp_extractor.policy_net.0", "mlp_extractor.value_net.0"}
    assert set(report.reused) == {
        "mlp_extractor.policy_net.2",
        "mlp_extractor.policy_net.4",
        "mlp_extractor.value_net.2",
        "mlp_extractor.value_net.4",
        "value_net",
    }
    assert report.frozen == ("mlp_extractor.policy_net.2", "mlp_extractor.value_net.2")
    assert dict(adapted.policy.named_parameters())["mlp_extractor.policy_net.0.weight"].requires_grad
    fresh = state(adapted)
    adapted.learn(128)
    after = adapted.policy.state_dict()
    assert torch.equal(after["mlp_extractor.policy_net.2.weight"], pretrained["mlp_extractor.policy_net.2.weight"])
    assert after["mlp_extractor.policy_net.0.weight"].shape == (16, 5)
    assert not torch.equal(after["mlp_extractor.policy_net.0.weight"], fresh["mlp_extractor.policy_net.0.weight"])


def test_appended_observations_widen_the_input_layers_so_the_adapted_policy_starts_as_the_pretrained_one():
    source = PPO("MlpPolicy", ToyEnv(3, 1), policy_kwargs={"net_arch": [16, 16]}, seed=0, **TINY_PPO)
    adapted = adapt(source, ToyEnv(5, 1), "finetune", seed=1)
    report = transfer_report(adapted)
    assert set(report.widened) == {"mlp_extractor.policy_net.0", "mlp_extractor.value_net.0"}
    assert not report.shape_mismatch and not report.reinitialised
    observations = np.random.default_rng(0).uniform(-1, 1, (32, 5)).astype(np.float32)
    with torch.no_grad():
        widened = adapted.policy.obs_to_tensor(observations)[0]
        pretrained = source.policy.obs_to_tensor(observations[:, :3])[0]
        assert torch.allclose(adapted.policy.predict_values(widened), source.policy.predict_values(pretrained))
    assert np.allclose(adapted.predict(observations, deterministic=True)[0],
                       source.predict(observations[:, :3], deterministic=True)[0])
    weight = adapted.policy.state_dict()["mlp_extractor.policy_net.0.weight"]
    assert torch.count_nonzero(weight[:, 3:]) == 0
    adapted.learn(256)
    assert torch.count_nonzero(adapted.policy.state_dict()["mlp_extractor.policy_net.0.weight"][:, 3:]) > 0


def test_sac_space_change_trains_and_reports_reuse():
    source = SAC("MlpPolicy", ToyEnv(3, 1), policy_kwargs={"net_arch": [16, 16, 16]}, seed=0, **TINY_SAC)
    adapted = adapt(source, ToyEnv(5, 2), "reinit_head", seed=1)
    report = transfer_report(adapted)
    assert report.widened == ("actor.latent_pi.0",)  # the critics read observation and action: not widened
    assert {"critic.qf0.0", "critic_target.qf0.0"} <= set(report.shape_mismatch)
    assert {"actor.mu", "actor.log_std", "critic.qf0.6"} <= set(report.reinitialised)
    assert {"actor.latent_pi.4", "critic.qf1.2", "critic_target.qf1.2"} <= set(report.reused)
    assert set(report.frozen) == {
        "actor.latent_pi.2",
        "critic.qf0.2",
        "critic.qf1.2",
        "critic_target.qf0.2",
        "critic_target.qf1.2",
    }
    assert adapted.target_entropy == -2.0
    frozen = keys_of(report.frozen, adapted)
    before = state(adapted)
    adapted.learn(80)
    after = adapted.policy.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in frozen)
    assert not torch.equal(after["actor.latent_pi.0.weight"], before["actor.latent_pi.0.weight"])


def test_same_seed_same_result(ppo):
    runs = [adapt(ppo, pendulum(), "finetune", seed=5).learn(64).policy.state_dict() for _ in range(2)]
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())


def test_report_is_json_ready(sac):
    adapted = adapt(sac, pendulum(), "l2sp", lr_scale=0.5, seed=2)
    record = json.loads(json.dumps(transfer_report(adapted).to_dict()))
    assert record["strategy"] == {
        "name": "l2sp",
        "lr_scale": 0.5,
        "learning_starts": None,
        "reset_entropy": False,
        "utd": None,
        "source_steps": 0,
        "alpha": 0.1,
    }
    assert record["overrides"]["learning_starts"] == 50 and record["seed"] == 2
