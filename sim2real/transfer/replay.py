"""Warm-start an off-policy learner's replay buffer with the pretrained policy's transitions in the source domain.

Simulated source steps cost no target (robot) time. With them in the buffer, the first updates
on the target are not made from a handful of target transitions alone, and the critic keeps
seeing the states the pretrained policy visits well (the offline-data idea of RLPD, Ball et al.
2023, here with source-simulator data); target transitions then take over as they accumulate,
since the buffer samples uniformly.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sim2real.transfer.errors import TransferError


def warm_start_replay(learner: OffPolicyAlgorithm, pretrained: BaseAlgorithm, source_env: gym.Env, steps: int,
                      seed: int | None = None) -> int:
    """Add ``steps`` transitions of ``pretrained`` (stochastic actions) in ``source_env`` to the learner's buffer.

    Returns the number of source episodes the steps spanned. The learner's buffer must hold
    ``steps`` transitions and collect from one env (SAC's usual setting on the target).
    """
    buffer = learner.replay_buffer
    if buffer is None or buffer.n_envs != 1:
        raise TransferError("the replay warm start needs a learner that collects from one env "
                            f"(this one has {getattr(buffer, 'n_envs', None)})")
    if steps > buffer.buffer_size:
        raise TransferError(f"source_steps {steps} exceeds the replay buffer ({buffer.buffer_size} transitions)")
    if source_env.observation_space != learner.observation_space or source_env.action_space != learner.action_space:
        raise TransferError("the source env's spaces differ from the learner's: the replay warm start needs the "
                            "target's spaces to be the source's")
    pretrained.set_random_seed(seed)
    obs, _ = source_env.reset(seed=seed)
    episodes = 0
    for _ in range(steps):
        action, _ = pretrained.predict(obs, deterministic=False)
        action = np.clip(action, source_env.action_space.low, source_env.action_space.high)
        next_obs, reward, terminated, truncated, _ = source_env.step(action)
        timeout = truncated and not terminated
        buffer.add(obs[None], next_obs[None], learner.policy.scale_action(action)[None], np.array([reward]),
                   np.array([terminated or truncated]), [{"TimeLimit.truncated": timeout}])
        obs = next_obs
        if terminated or truncated:
            episodes += 1
            obs, _ = source_env.reset()
    return episodes
