"""The served env's side of the testbed: each (episode, seq) step applied at most once, the safe hold, the log.

The server owns connections and who may speak; this module owns what happens to the env. Its
state (the current episode, the last reply) outlives connections, so a client that reconnects
mid-step and resends gets the reply of the action that was already applied. Replies are encoded
message bodies, ready to be tagged on whichever connection carries them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.testbed.applied import AppliedLog, LastStep
from sim2real.testbed.encoding import encode_value, safe_info
from sim2real.testbed.protocol import RESET_OK, STEP_OK, Code, TestbedError, error_message, pack_body

logger = logging.getLogger("sim2real.testbed.server")  # what the env does is the server's to say


class Refusal(Exception):
    """A well-formed request the server declines; answered with ERROR, connection kept."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Episode:
    """Server-side state of the current episode; outlives the connections that drive it."""

    id: int
    session: str
    last_seen: float
    last_seq: int = 0
    last_reply: bytes | None = None  # the body, tagged afresh on whichever connection resends
    done: bool = False
    held: bool = False


class EpisodeExecutor:
    """Run the served env's episodes: reset, steps exactly once per (episode, seq), hold when the client is gone."""

    def __init__(self, env: gym.Env, max_frame_bytes: int, applied_log: Path | None = None) -> None:
        self.env = env
        self.max_frame_bytes = max_frame_bytes
        self.applied_log_path = applied_log
        self.episode: Episode | None = None
        self.episodes = 0
        self.counts = {"executed": 0, "replayed": 0, "holds": 0}
        self.env_errors = 0
        self._applied = None if applied_log is None else AppliedLog(applied_log)
        if self._applied is not None:
            self._recover(self._applied.last)

    def close(self) -> None:
        """Close the applied-step log (the env is its owner's to close)."""
        if self._applied is not None:
            self._applied.close()

    def _recover(self, last: LastStep | None) -> None:
        """Number episodes on from the applied-step log and keep its last step's reply for a resend.

        The env is fresh, so that episode cannot go on: it is over, but a client that resends the
        last step it sent learns whether it was applied (the logged reply) or not ("episode over").
        """
        if last is None:
            return
        self.episodes = last.episode
        self.episode = Episode(id=last.episode, session=last.session, last_seen=time.monotonic(),
                               last_seq=last.seq, last_reply=last.reply, done=True)
        logger.warning("resuming after episode %d step %d of the applied-step log %s; that episode is over",
                       last.episode, last.seq, self.applied_log_path)

    def heard_from(self, session: str | None, now: float) -> None:
        """The session's client spoke: its episode is not left alone."""
        episode = self.episode
        if episode is not None and episode.session == session:
            episode.last_seen = now

    def watch(self, now: float, hold_after: float) -> None:
        """Hold the env when the episode's client has been silent for more than hold_after seconds."""
        episode = self.episode
        if episode is not None and not (episode.done or episode.held):
            silent = now - episode.last_seen
            if silent > hold_after:
                self._hold(episode, f"client silent for {silent:.2f} s (hold_after={hold_after})")

    def left(self, session: str | None) -> None:
        """The session's client said goodbye: hold the env if it left mid-episode."""
        episode = self.episode
        if episode is not None and episode.session == session and not (episode.done or episode.held):
            self._hold(episode, "client closed mid-episode")

    def _hold(self, episode: Episode, reason: str) -> None:
        episode.held = True
        self.counts["holds"] += 1
        hold = getattr(self.env.unwrapped, "hold", None)
        if not callable(hold):
            logger.warning("episode %d: %s; the env has no hold(), nothing done", episode.id, reason)
            return
        logger.warning("episode %d: %s; holding the env", episode.id, reason)
        try:
            hold()
        except Exception:
            logger.exception("episode %d: env hold() raised", episode.id)

    def reset(self, session: str, seed: Any, options: Any) -> bytes:
        """Start a new episode for the session; the encoded RESET_OK reply."""
        if seed is not None and seed < 0:
            raise Refusal(Code.BAD_MESSAGE, f"seed {seed} is negative; accepted: an int >= 0 or nil")
        self.episode = None
        self.episodes += 1
        episode = Episode(id=self.episodes, session=session, last_seen=time.monotonic())
        start = time.perf_counter()
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception as exc:
            logger.exception("env.reset raised")
            raise Refusal(Code.ENV_ERROR, f"env.reset raised {type(exc).__name__}: {exc}") from None
        env_ms = (time.perf_counter() - start) * 1e3
        reply = self._encode_result({"type": RESET_OK, "episode": episode.id, "env_ms": env_ms}, obs, info, "reset")
        if self._applied is not None:
            self._applied.reset(episode.id, episode.session)
        self.episode = episode
        return reply

    def step(self, session: str | None, eid: Any, seq: Any, value: Any) -> bytes:
        """Apply step seq of episode eid once (a resend of the last one gets its reply again); the encoded reply."""
        episode = self.episode
        if episode is None or eid != episode.id or episode.session != session:
            current = "none" if episode is None else f"{episode.id}"
            raise Refusal(Code.EPISODE, f"episode {eid} is not this session's current episode ({current}); reset first")
        if seq == episode.last_seq and episode.last_reply is not None:
            self.counts["replayed"] += 1
            return episode.last_reply
        expected = episode.last_seq + 1
        if seq < expected:
            raise Refusal(Code.STALE_SEQ, f"seq {seq} of episode {eid} is stale; expected {expected}")
        if seq > expected:
            raise Refusal(Code.SEQ_GAP, f"seq {seq} of episode {eid} skips ahead; expected {expected}")
        if episode.done:
            raise Refusal(Code.EPISODE_OVER, f"episode {eid} ended at seq {episode.last_seq}; reset first")
        action = self._check_action(value)
        start = time.perf_counter()
        self.counts["executed"] += 1
        episode.held = False
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as exc:
            logger.exception("env.step raised at episode %d seq %d", eid, seq)
            self.env_errors += 1
            episode.done = True
            reply = pack_body(error_message(Code.ENV_ERROR, f"env.step raised {type(exc).__name__}: {exc}"))
        else:
            env_ms = (time.perf_counter() - start) * 1e3
            episode.done = bool(terminated or truncated)
            try:
                header = {"type": STEP_OK, "episode": eid, "seq": seq, "reward": float(reward),
                          "terminated": bool(terminated), "truncated": bool(truncated), "env_ms": env_ms}
                reply = self._encode_result(header, obs, info, "step")
            except (Refusal, TypeError, ValueError) as exc:
                episode.done = True
                reply = pack_body(error_message(Code.ENV_ERROR, f"env.step returned an unsendable result: {exc}"))
        episode.last_seq, episode.last_reply = seq, reply
        if self._applied is not None:
            self._applied.step(eid, seq, np.asarray(action).tolist(), reply)
        return reply

    def _encode_result(self, header: dict[str, Any], obs: Any, info: Mapping[str, Any], what: str) -> bytes:
        try:
            message = {**header, "obs": encode_value(obs), "info": safe_info(info)}
            return pack_body(message, self.max_frame_bytes)
        except TestbedError as exc:
            raise Refusal(Code.ENV_ERROR, f"the result of env.{what} cannot be sent: {exc}") from None

    def _check_action(self, value: Any) -> Any:
        """Refuse an action outside the action space (the server's own guard, behind the client's shield)."""
        space = self.env.action_space
        if isinstance(space, gym.spaces.Box):
            if not isinstance(value, np.ndarray) or value.shape != space.shape:
                shape = value.shape if isinstance(value, np.ndarray) else "a scalar"
                raise Refusal(Code.BAD_ACTION, f"action has shape {shape}; accepted: shape {space.shape}")
            if not np.can_cast(value.dtype, space.dtype, "same_kind"):
                raise Refusal(Code.BAD_ACTION, f"action dtype {value.dtype} cannot become {space.dtype}")
            if not (np.isfinite(value) & (value >= space.low) & (value <= space.high)).all():
                raise Refusal(Code.BAD_ACTION, f"action {np.array2string(value)[:200]} is outside {space}")
            return value.astype(space.dtype, copy=False)
        if isinstance(space, gym.spaces.Discrete):
            if not isinstance(value, int) or not space.contains(value):
                raise Refusal(Code.BAD_ACTION, f"action {value!r} is not in {space}")
            return value
        raise Refusal(Code.BAD_ACTION, f"action space {space} is not supported")
