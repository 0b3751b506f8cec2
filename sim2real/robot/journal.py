"""The client's journal of a robot run: every reset and step sent to the robot, on disk as it happens.

A step is journaled twice: its *intent* (episode, seq, the action after the safety shield) before
it is sent, its *result* (observation, reward, flags, success) when the reply comes. A client that
dies in between finds the intent on restart and resends exactly that step: the server's
exactly-once cache (or its applied-step log, after a server restart) answers with the step's
reply, so no step is applied twice and none is lost from training. Records are JSON lines, one
``write`` each (a SIGKILL loses nothing written), fsynced every ``fsync_every`` seconds and at
every checkpoint (a power cut loses at most that much).

The journal is also the replay buffer's source of truth: training transitions are rebuilt from
it on resume, so a checkpoint need not carry the buffer (see ``robot.learner``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.records import JsonlWriter, read_jsonl
from sim2real.testbed.client import RemoteEnv

TRAIN, EVAL = "train", "eval"
SESSION, RESET, INTENT, STEP, END = "session", "reset", "intent", "step", "end"


@dataclass(frozen=True)
class Transition:
    """One training step as the learner takes it: (s, a, r, s', terminated, truncated), a as applied."""

    obs: np.ndarray
    action: np.ndarray
    reward: float
    next_obs: np.ndarray
    terminated: bool
    truncated: bool


@dataclass(frozen=True)
class Pending:
    """A step whose intent is on disk but whose result is not: sent or about to be, outcome unknown."""

    phase: str
    episode: int | None
    seq: int
    action: np.ndarray
    obs: np.ndarray | None


@dataclass
class JournalState:
    """What a journal says about a run: transitions, step counts, the session and a step left pending."""

    transitions: list[Transition] = field(default_factory=list)
    session: str | None = None
    steps: dict[str, int] = field(default_factory=lambda: {TRAIN: 0, EVAL: 0})
    resets: dict[str, int] = field(default_factory=lambda: {TRAIN: 0, EVAL: 0})
    span_seconds: float = 0.0
    stepping_seconds: float = 0.0
    stepping_count: int = 0
    pending: Pending | None = None

    @property
    def train_steps(self) -> int:
        """Training steps applied on the robot (the budget counts these)."""
        return self.steps[TRAIN]


def read_journal(path: str | Path) -> JournalState:
    """Replay the journal at `path` (a torn last line ignored) into a :class:`JournalState`."""
    state = JournalState()
    if not Path(path).exists():
        return state
    last_obs: dict[int, np.ndarray] = {}
    last_time: dict[int, float] = {}
    records = read_jsonl(path)
    if records:
        state.span_seconds = records[-1]["time"] - records[0]["time"]
    for record in records:
        kind = record["kind"]
        if kind == SESSION:
            state.session = record["session"]
        elif kind == RESET:
            last_obs[record["episode"]] = np.asarray(record["obs"], dtype=np.float32)
            last_time[record["episode"]] = record["time"]
            state.resets[record["phase"]] += 1
        elif kind == INTENT:
            episode = record["episode"]
            state.pending = Pending(record["phase"], episode, record["seq"],
                                    np.asarray(record["action"], dtype=np.float32), last_obs.get(episode))
        elif kind == STEP:
            state.pending = None
            episode = record["episode"]
            obs = np.asarray(record["obs"], dtype=np.float32)
            state.steps[record["phase"]] += 1
            if episode in last_time:
                state.stepping_seconds += record["time"] - last_time[episode]
                state.stepping_count += 1
            last_time[episode] = record["time"]
            if record["phase"] == TRAIN and episode in last_obs:
                state.transitions.append(Transition(
                    last_obs[episode], np.asarray(record["action"], dtype=np.float32), float(record["reward"]),
                    obs, bool(record["terminated"]), bool(record["truncated"])))
            last_obs[episode] = obs
        elif kind == END:
            state.pending = None
    return state


class Journal:
    """Append journal records; ``fsync_every`` seconds bound what a power cut can take."""

    def __init__(self, path: str | Path, fsync_every: float = 1.0) -> None:
        self.path = Path(path)
        self._writer = JsonlWriter(self.path, fsync_every=fsync_every)

    def write(self, kind: str, **fields: Any) -> None:
        """Append one record (``time``: wall-clock seconds, for rates and robot time)."""
        self._writer.write({"kind": kind, "time": time.time(), **fields})

    def fsync(self) -> None:
        """Force every record so far onto the disk (before a checkpoint that counts them)."""
        self._writer.fsync()

    def close(self) -> None:
        """Fsync and close."""
        self._writer.close()


def plain(value: Any) -> Any:
    """An observation or action as JSON data (float32 values are exact as JSON floats)."""
    return np.asarray(value).tolist()


class Journaled(gym.Wrapper):
    """The RemoteEnv with every reset and step journaled (intent before, result after); under the shield.

    ``on_transition`` gets each training step as a :class:`Transition`; ``cut_now`` (training)
    says, after a step, whether the episode is cut there for an evaluation (the cut is journaled
    as an ``end`` and reported as a truncation).
    """

    def __init__(self, remote: RemoteEnv, journal: Journal, phase: str, counts: dict[str, int],
                 on_transition: Callable[[Transition], None] | None = None,
                 cut_now: Callable[[], bool] | None = None) -> None:
        super().__init__(remote)
        self.remote, self.journal, self.phase, self.counts = remote, journal, phase, counts
        self.on_transition, self.cut_now = on_transition, cut_now
        self.pending: Pending | None = None
        self._obs: np.ndarray | None = None
        self._session: str | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the robot and journal the first observation."""
        self._note_session()
        obs, info = self.env.reset(**kwargs)
        self._obs = np.asarray(obs, dtype=np.float32)
        self.journal.write(RESET, phase=self.phase, episode=self.remote.episode, obs=plain(obs))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Journal the intent, step the robot, journal the result (and hand a training step on)."""
        self._note_session()
        episode, seq = self.remote.episode, self.remote.seq + 1
        self.journal.write(INTENT, phase=self.phase, episode=episode, seq=seq, action=plain(action))
        self.pending = Pending(self.phase, episode, seq, np.asarray(action, dtype=np.float32), self._obs)
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.record(episode, seq, action, (obs, reward, terminated, truncated, info))

    def record(self, episode: int | None, seq: int, action: Any,
               result: tuple[Any, float, bool, bool, dict[str, Any]]) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Journal a step's result (also a resent step's) and apply the evaluation cut."""
        obs, reward, terminated, truncated, info = result
        self.pending = None
        self.journal.write(STEP, phase=self.phase, episode=episode, seq=seq, action=plain(action), obs=plain(obs),
                           reward=float(reward), terminated=bool(terminated), truncated=bool(truncated),
                           success=bool(info.get("is_success", False)))
        self.counts[self.phase] += 1
        next_obs = np.asarray(obs, dtype=np.float32)
        if self.on_transition is not None and self._obs is not None:
            self.on_transition(Transition(self._obs, np.asarray(action, dtype=np.float32), float(reward), next_obs,
                                          bool(terminated), bool(truncated)))
        self._obs = next_obs
        if not (terminated or truncated) and self.cut_now is not None and self.cut_now():
            self.journal.write(END, episode=episode, reason="cut at an evaluation point")
            truncated = True
        return obs, reward, terminated, truncated, info

    def resume_obs(self, obs: np.ndarray | None) -> None:
        """The observation a recovered step starts from (read back from the journal)."""
        self._obs = obs

    def _note_session(self) -> None:
        if self.remote.session != self._session:
            self._session = self.remote.session
            self.journal.write(SESSION, session=self._session)


def iter_steps(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every step result in the journal at `path`, train and eval (for audits against the server's log)."""
    return (record for record in read_jsonl(path) if record["kind"] == STEP)
