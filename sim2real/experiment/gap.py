"""The zero-shot gap: how a policy does on a target before any training, and the advice it gives.

The pretrained policy, a uniformly random one and the policy back on its source are evaluated on
the same episode seeds; how much of its source edge over random actions it keeps on the target
decides whether to use it as it is, transfer it, or retrain.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from sim2real import catalog, zoo
from sim2real.defaults import EVAL_SEED
from sim2real.factory import make_env
from sim2real.formatting import percent
from sim2real.rollout import evaluate
from sim2real.spec import SOURCE, TaskSpec

ZERO_SHOT, TRANSFER, RETRAIN = "zero_shot", "transfer", "retrain"
LITTLE_RETAINED = 0.1
"""Below this share of its source edge over random actions, a policy is 'near zero' on the target."""


class _UniformRandom:
    """Uniformly random actions from a seeded copy of the action space: the floor of the zero-shot gap."""

    def __init__(self, space: gym.Space, seed: int) -> None:
        self.space = copy.deepcopy(space)
        self.space.seed(seed)

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, None]:
        """A random action, whatever the observation."""
        return self.space.sample(), None


def _level(policy: Any, env: gym.Env, episodes: int) -> dict[str, float]:
    summary = evaluate(policy, env, episodes, seed=EVAL_SEED)
    return {"success": summary["success_rate"], "return": summary["mean_return"]}


def zero_shot_gap(spec: str | Path | TaskSpec, policy: str | Path | BaseAlgorithm, target: str,
                  episodes: int) -> dict[str, Any]:
    """Success and return of the pretrained policy on the source and on `target`, and of random actions on `target`.

    Measured before any budget is spent, to tell whether transfer is worth it (see `recommend`);
    `gap` is the drop from source to target and `retained` the share of its edge over random
    actions the policy keeps on the target, both in the task's threshold metric. A target whose
    observation or action differs from the policy's (a changed task) has no zero-shot level: its
    `spaces` say how they differ.
    """
    spec = catalog.load(spec)
    kind = spec.target(target).kind
    source_env = make_env(spec, SOURCE)
    try:
        env = make_env(spec, target)
    except BaseException:
        source_env.close()
        raise
    try:
        model = policy if isinstance(policy, BaseAlgorithm) else zoo.load_policy(policy, source_env)
        changed = zoo.space_changes(model, env)
        gap: dict[str, Any] = {
            "target": target,
            "kind": kind,
            "episodes": episodes,
            "metric": spec.threshold.metric,
            "threshold": spec.threshold.value,
            "spaces": changed,
            "zero_shot": None if changed else _level(model, env, episodes),
            "source": _level(model, source_env, episodes),
            "random": _level(_UniformRandom(env.action_space, EVAL_SEED), env, episodes),
        }
    finally:
        source_env.close()
        env.close()
    if changed:
        return {**gap, "gap": None, "retained": None}
    source, zero, _ = _levels(gap)
    return {**gap, "gap": source - zero, "retained": _retained(gap)}


def _levels(gap: Mapping[str, Any]) -> tuple[float, float, float]:
    """The source, zero-shot and random-action levels of a gap, in its threshold metric."""
    metric = gap["metric"]
    return gap["source"][metric], gap["zero_shot"][metric], gap["random"][metric]


def _retained(gap: Mapping[str, Any]) -> float | None:
    """Share of the source edge over random actions kept on the target; None without a real edge on the source.

    An edge is real when it covers at least LITTLE_RETAINED of the way from random actions to the
    threshold: below that, evaluation noise would decide the ratio.
    """
    source, zero, floor = _levels(gap)
    edge = source - floor
    if edge <= 0 or edge < LITTLE_RETAINED * abs(gap["threshold"] - floor):
        return None
    return (zero - floor) / edge


def _show(metric: str, value: float) -> str:
    return f"{percent(value)}" if metric == "success" else f"{value:.1f}"


def recommend(gap: Mapping[str, Any]) -> tuple[str, str]:
    """The verdict on a zero-shot gap ("zero_shot", "transfer" or "retrain") and a sentence saying why.

    zero_shot: the policy already meets the threshold on the target. retrain: it has no real edge
    over random actions on the source, or keeps less than LITTLE_RETAINED of it on a target while
    missing the threshold on the source too, so adapting it is unlikely to beat scratch by much.
    transfer: otherwise. A policy that solves the source but lost its edge on the target is the
    case for residual (the far targets), one that kept part of it for finetune (the near targets:
    both measured in the README); a new task, its spaces changed or not, for finetune (measured on
    park and place). Reads `metric`, `threshold`, `target` and the three levels.
    """
    metric, threshold, target = gap["metric"], gap["threshold"], gap["target"]
    label = "success rate" if metric == "success" else "mean return"
    if gap.get("spaces"):
        source, floor = gap["source"][metric], gap["random"][metric]
        return TRANSFER, (f"{target} changes the task and its spaces ({gap['spaces']}): the pretrained policy "
                          f"cannot run there as it is ({label} {_show(metric, source)} on the source, "
                          f"{_show(metric, floor)} with random actions on {target}; threshold "
                          f"{_show(metric, threshold)}). Try finetune first: it reuses every layer that fits and "
                          f"widens those that read new observation entries (the new inputs start at zero weight, "
                          f"so it starts at the pretrained behaviour), then trains every weight; residual and "
                          f"zero_shot run the pretrained policy as it is and cannot run here.")
    source, zero, floor = _levels(gap)
    numbers = (f"{label} on {target} {_show(metric, zero)} zero-shot, {_show(metric, source)} on the source, "
               f"{_show(metric, floor)} with random actions; threshold {_show(metric, threshold)}")
    if zero >= threshold:
        return ZERO_SHOT, (f"Zero-shot is enough on {target}: the pretrained policy meets the threshold without "
                           f"training ({numbers}). Transfer can only confirm it.")
    if gap.get("kind") == "task":
        return TRANSFER, (f"{target} is a new task ({numbers}): the pretrained policy is not expected to solve it "
                          f"as it is, but its skills should carry over. Try finetune first: it starts at the "
                          f"pretrained behaviour and retrains every weight, which a new goal needs; residual only "
                          f"corrects the old policy's actions toward its old goal.")
    retained = _retained(gap)
    if retained is None:
        return RETRAIN, (f"Expect little gain from transfer on {target}: the pretrained policy does hardly better "
                         f"than random actions even on the source ({numbers}). Train a better source policy, or "
                         f"train on the target (scratch is the baseline).")
    note = "" if source >= threshold else " It misses the threshold on the source as well."
    if retained < LITTLE_RETAINED and source < threshold:
        return RETRAIN, (f"Expect little gain from transfer on {target}: the pretrained policy does barely better "
                         f"than random actions there ({numbers}).{note} Consider retraining on the target "
                         f"(scratch is the baseline) or a better source policy.")
    if retained < LITTLE_RETAINED:
        return TRANSFER, (f"{target} undoes a policy that still solves the source ({numbers}): the shift is likely "
                          f"a correction of its actions (a turned mount, a weaker motor) or physics the simulator "
                          f"can fit. Try residual first (SAC learns a correction of the frozen policy's action, "
                          f"starting at its behaviour) and, from a SAC policy, finetune with utd=2 (its critic "
                          f"carries over), then sysid_finetune (fits the simulator to recorded target episodes; "
                          f"costs only the recorded steps); re-initialising or fine-tuning a PPO policy's weights "
                          f"seldom beats scratch this far from the source.")
    return TRANSFER, (f"Transfer should pay on {target}: the pretrained policy keeps {percent(retained)} of its "
                      f"edge over random actions ({numbers}).{note} Try finetune first: it starts at the pretrained "
                      f"behaviour and moves every weight a little at each update, which is what a near shift needs. "
                      f"Residual starts there too, but a policy that half works is where its fresh critic hurts: "
                      f"the correction is dragged off before the critic knows where that leads.")
