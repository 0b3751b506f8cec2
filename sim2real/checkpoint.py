"""Keep the best weights seen during training, by periodic deterministic evaluation; stop early at a level."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from sim2real.defaults import EVAL_SEED
from sim2real.factory import make_env
from sim2real.rollout import evaluate
from sim2real.spec import TaskSpec, Threshold


class BestCheckpoint(BaseCallback):
    """Every `every` env steps, evaluate deterministically and keep the best weights (success, then return).

    Episode i of each evaluation is reset with seed ``seed + i``. With `stop_at`, training ends at
    the first evaluation that reaches it (SB3's callback protocol: `_on_step` returns False). With
    `gate`, an evaluation is skipped while less than that share of the last 100 training episodes
    (SB3's ``ep_success_buffer``, free to read) succeeded: an evaluation of a policy that still
    fails most of its episodes costs as many steps as training and cannot reach the stop level.
    The last evaluation, when training ends, always runs.
    """

    def __init__(self, spec: TaskSpec, target: str, every: int, episodes: int,
                 on_eval: Callable[[int, dict[str, Any]], None] | None = None, seed: int = EVAL_SEED,
                 evaluate_at_start: bool = False, stop_at: Threshold | None = None, gate: float = 0.0) -> None:
        super().__init__()
        self.evaluate_at_start, self.stop_at, self.gate = evaluate_at_start, stop_at, gate
        self.stopped_at: int | None = None
        self.skipped = 0
        self.eval_env = make_env(spec, target)
        self.every, self.episodes, self.on_eval, self.seed = every, episodes, on_eval, seed
        self.best: tuple[float, float] | None = None
        self.best_state: dict[str, Any] | None = None
        self.best_steps = 0
        self.history: list[dict[str, Any]] = []
        self._next = every

    def _on_training_start(self) -> None:
        """A continued run counts the weights it starts from, so it never ends worse than its bundle."""
        self.num_timesteps = self.model.num_timesteps
        self._next = self.num_timesteps + self.every
        if self.evaluate_at_start:
            self.evaluate_now()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            if self._worth_evaluating():
                self.evaluate_now()
            else:
                self.skipped += 1
        return self.stopped_at is None

    def _on_training_end(self) -> None:
        if self.stopped_at is None:
            self.evaluate_now()
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)
        self.eval_env.close()

    def _worth_evaluating(self) -> bool:
        """Whether enough recent training episodes succeeded (always, for a task without success)."""
        recent = self.model.ep_success_buffer
        return not recent or sum(recent) / len(recent) >= self.gate

    def evaluate_now(self) -> None:
        """Evaluate the current weights and remember them if they are the best so far."""
        summary = evaluate(self.model, self.eval_env, self.episodes, seed=self.seed)
        score = (summary["success_rate"], summary["mean_return"])
        self.history.append({"steps": self.num_timesteps, "success": score[0], "return": score[1]})
        self.logger.record("eval/success_rate", score[0])
        self.logger.record("eval/mean_return", score[1])
        if self.best is None or score > self.best:
            self.best, self.best_steps = score, self.num_timesteps
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
        if self.stop_at is not None and self.stopped_at is None and self.stop_at.reached(*score):
            self.stopped_at = self.num_timesteps
        if self.on_eval is not None:
            self.on_eval(self.num_timesteps, summary)
