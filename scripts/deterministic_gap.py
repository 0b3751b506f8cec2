"""Deterministic against sampled success while a model trains on a target: is a collapsing curve the policy or its mean?

Trains STRATEGY (default: scratch) from POLICY on the target in chunks of --every steps and,
after each, evaluates the model on the same episodes three ways: with its deterministic actions
(SB3's clip(μ): what the harness and a deployment use), with sampled ones (what PPO optimises),
and with the mean of the actions the env applies to those samples (E[clip(a)], see
sim2real.applied_mean). The README's truck table: python scripts/deterministic_gap.py
driving-ppo-nominal --task driving --target truck
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real import catalog
from sim2real.applied_mean import AppliedMeanPolicy
from sim2real.defaults import EVAL_SEED
from sim2real.errors import Sim2RealError
from sim2real.factory import make_env
from sim2real.formatting import percent
from sim2real.models import build_vec_env, n_envs_for
from sim2real.rollout import evaluate
from sim2real.transfer import adapt
from sim2real.transfer.strategies import parse_strategy
from sim2real.zoo import load_policy


class AppliedActions(gym.ActionWrapper):
    """Keeps the actions the env applied (clipped to its bounds) since the last `take`."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.applied: list[np.ndarray] = []

    def action(self, action: Any) -> np.ndarray:
        clipped = np.clip(action, self.action_space.low, self.action_space.high)
        self.applied.append(clipped)
        return clipped

    def take(self) -> str:
        """The mean applied action since the last call, as "[a, b]"; the record starts afresh."""
        mean, self.applied = np.mean(self.applied, axis=0), []
        return "[" + ", ".join(f"{value:.2f}" for value in mean) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="a zoo name or a policy bundle")
    parser.add_argument("--task", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--strategy", default="scratch", help="as `sim2real transfer --strategies` spells one")
    parser.add_argument("--steps", type=int, default=65_536, help="target steps in all")
    parser.add_argument("--every", type=int, default=4_096, help="target steps between evaluations")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per evaluation, each way")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("steps", "every", "episodes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        strategy = parse_strategy(args.strategy)
        spec = catalog.load(args.task)
        env = AppliedActions(make_env(spec, args.target))
        pretrained = load_policy(args.policy)
    except Sim2RealError as error:
        parser.error(str(error))
    if not strategy.trains:
        parser.error(f"--strategy {args.strategy} does not train; give one that does, e.g. scratch or finetune")
    venv = build_vec_env(spec, args.target, randomize=False, n_envs=n_envs_for(spec, pretrained), seed=args.seed,
                         parallel=False)
    model = adapt(pretrained, venv, strategy, seed=args.seed)
    try:
        applied_mean = AppliedMeanPolicy(model)
    except Sim2RealError as error:
        parser.error(str(error))
    print(f"{strategy.name} from {args.policy} on {args.target}, seed {args.seed}, {args.episodes} episodes per point")
    print("steps   deterministic: success, mean action   sampled: success, mean action   applied mean: success, "
          "mean action")
    for chunk in range(args.steps // args.every):
        model.learn(args.every, reset_num_timesteps=chunk == 0)
        deterministic = evaluate(model, env, args.episodes, seed=EVAL_SEED)["success_rate"]
        deterministic_actions = env.take()
        sampled = evaluate(model, env, args.episodes, seed=EVAL_SEED, deterministic=False)["success_rate"]
        sampled_actions = env.take()
        expected = evaluate(applied_mean, env, args.episodes, seed=EVAL_SEED)["success_rate"]
        print(f"{model.num_timesteps:>6,}  {percent(deterministic):>5} {deterministic_actions:>14}   "
              f"{percent(sampled):>5} {sampled_actions:>14}   {percent(expected):>5} {env.take():>14}", flush=True)


if __name__ == "__main__":
    main()
