"""The learner beside the robot: SAC updates in a thread, weights handed to the actor between steps.

The actor never waits on it: transitions go into a queue, the learner moves them into the replay
buffer and owes ``utd`` gradient steps for each, and publishes the actor's weights every
``publish_every`` updates. If it falls behind (a slow machine), the debt grows and the report
shows the updates it made; the robot keeps its control rate either way.

Checkpoints hold the model with its optimiser and entropy-coefficient state (SB3's zip) and a
small state file (transitions consumed, updates owed); both are replaced atomically, the state
file last, so it always names a complete model. The replay buffer is not written: it is rebuilt
from the journal, which already holds every transition (a buffer of 8,000 grasping transitions
would be a 2 MB write per checkpoint for data that is on disk anyway).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sim2real import zoo
from sim2real.records import write_json_atomic
from sim2real.robot.journal import Transition

STATE_FILE = "checkpoint.json"


@dataclass(frozen=True)
class CheckpointState:
    """What a checkpoint's model (``model``, a file beside the state) has learned from: the first ``consumed``
    transitions, with ``owed`` updates still to make for them."""

    model: str
    consumed: int
    owed: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for checkpoint.json."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointState:
        """Read checkpoint.json's data back."""
        return cls(str(data["model"]), int(data["consumed"]), int(data["owed"]))


def read_checkpoint(directory: Path) -> CheckpointState | None:
    """The checkpoint state in `directory`, or None when no checkpoint was completed there."""
    path = directory / STATE_FILE
    return CheckpointState.from_json(json.loads(path.read_text())) if path.exists() else None


class Learner(threading.Thread):
    """Off-policy updates on ``model`` from queued transitions, ``utd`` gradient steps per transition."""

    def __init__(self, model: OffPolicyAlgorithm, utd: int, budget: int, checkpoint_dir: Path,
                 publish_every: int = 8, checkpoint_every: int = 1000, consumed: int = 0, owed: int = 0,
                 before_checkpoint: Callable[[], None] | None = None) -> None:
        super().__init__(name="sim2real-learner", daemon=True)
        self.model, self.utd, self.budget = model, int(utd), int(budget)
        self.checkpoint_dir, self.publish_every = checkpoint_dir, int(publish_every)
        self.checkpoint_every = int(checkpoint_every)
        self.before_checkpoint = before_checkpoint
        self.consumed, self.owed = consumed, owed
        self._queue: queue.Queue[Transition] = queue.Queue()
        self._requests: queue.Queue[tuple[int, threading.Event, list[dict[str, torch.Tensor]]]] = queue.Queue()
        self._halt = threading.Event()
        self._published: tuple[int, dict[str, torch.Tensor] | None] = (0, None)
        self.failure: BaseException | None = None
        model.set_logger(Logger(None, []))
        model.num_timesteps = consumed

    @property
    def total_updates(self) -> int:
        """Gradient steps the model has taken, over every resume (SB3's own count, restored with the checkpoint)."""
        return int(self.model._n_updates)

    def put(self, transition: Transition) -> None:
        """Hand a transition over (never blocks)."""
        self._queue.put(transition)

    def add_consumed(self, transitions: list[Transition]) -> None:
        """Put transitions into the replay buffer that the checkpointed model has already learned from."""
        for transition in transitions:
            self._add(transition)

    def weights(self) -> tuple[int, dict[str, torch.Tensor] | None]:
        """The newest published actor weights and their version (0: none published yet), read as one pair."""
        return self._published

    def checkpoint(self, consumed: int, timeout: float = 120.0) -> dict[str, torch.Tensor]:
        """Checkpoint once the first `consumed` transitions are in the buffer; the checkpoint's actor weights.

        The actor calls this at an evaluation point, so the evaluated weights are the checkpoint's
        and a resumed run evaluates exactly what the interrupted one did.
        """
        done, weights = threading.Event(), []
        self._requests.put((consumed, done, weights))
        deadline = time.monotonic() + timeout
        while not done.wait(0.1):
            self.raise_failure()
            if not self.is_alive():
                raise RuntimeError("the learner stopped before the checkpoint")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no checkpoint within {timeout} s")
        return weights[0]

    def stop(self) -> None:
        """Stop after the current update; the caller joins."""
        self._halt.set()

    def run(self) -> None:
        try:
            torch.set_num_threads(1)
            self._publish()
            since_publish = 0
            while not self._halt.is_set():
                self._drain()
                if self._serve_request():
                    continue
                if self.owed > 0 and self._ready():
                    batch = min(self.owed, self.utd)
                    self.model._current_progress_remaining = max(0.0, 1.0 - self.model.num_timesteps / self.budget)
                    self.model.train(gradient_steps=batch, batch_size=self.model.batch_size)
                    self.owed -= batch
                    since_publish += batch
                    if since_publish >= self.publish_every:
                        self._publish()
                        since_publish = 0
                else:
                    if since_publish:
                        self._publish()
                        since_publish = 0
                    self._wait_for_work()
        except BaseException as exc:
            self.failure = exc

    def _ready(self) -> bool:
        """SB3's rule: updates start once more than ``learning_starts`` steps were collected."""
        model = self.model
        return model.num_timesteps > model.learning_starts and model.replay_buffer.size() >= model.batch_size

    def _wait_for_work(self) -> None:
        try:
            transition = self._queue.get(timeout=0.02)
        except queue.Empty:
            return
        self._take(transition)

    def _drain(self) -> None:
        while True:
            try:
                transition = self._queue.get_nowait()
            except queue.Empty:
                return
            self._take(transition)

    def _take(self, transition: Transition) -> None:
        self._add(transition)
        self.consumed += 1
        self.model.num_timesteps = self.consumed
        if self.consumed > self.model.learning_starts:
            self.owed += self.utd
        if self.consumed % self.checkpoint_every == 0:
            self._save()

    def _add(self, transition: Transition) -> None:
        model = self.model
        action = model.policy.scale_action(transition.action)
        done = transition.terminated or transition.truncated
        info = {"TimeLimit.truncated": transition.truncated and not transition.terminated}
        model.replay_buffer.add(transition.obs[None], transition.next_obs[None], action[None],
                                np.array([transition.reward]), np.array([done]), [info])

    def _serve_request(self) -> bool:
        try:
            consumed, done, weights = self._requests.queue[0]
        except IndexError:
            return False
        if self.consumed < consumed:
            self._wait_for_work()
            return True
        self._requests.get_nowait()
        self._save()
        self._publish()
        weights.append(self._published[1])
        done.set()
        return True

    def _save(self) -> None:
        """Model first (its own file), then the state naming it: the state always names a complete model.

        ``before_checkpoint`` (the journal's fsync) runs first, so a checkpoint never counts
        transitions that a power cut could still take from the journal.
        """
        if self.before_checkpoint is not None:
            self.before_checkpoint()
        name = f"model-{self.consumed}.zip"
        zoo.save_model_atomic(self.model, self.checkpoint_dir / name)
        state = CheckpointState(name, self.consumed, self.owed)
        write_json_atomic(self.checkpoint_dir / STATE_FILE, state.to_json())
        for old in self.checkpoint_dir.glob("model-*.zip"):
            if old.name != name:
                old.unlink()

    def _publish(self) -> None:
        actor = self.model.policy.actor
        weights = {name: value.detach().clone() for name, value in actor.state_dict().items()}
        self._published = (self._published[0] + 1, weights)

    def raise_failure(self) -> None:
        """Raise here, in the actor's thread, what stopped the learner (nothing if it runs)."""
        if self.failure is not None:
            raise RuntimeError(f"the learner failed: {self.failure!r}") from self.failure
