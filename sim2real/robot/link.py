"""The robot link of a run: the RemoteEnv behind the journal and the shield, reopened after any failure.

One place opens the testbed for a robot run, and one place recovers from a failure: whatever
broke (the link dropped, the server restarted, this process was killed and rerun), the link is
reopened with the journal's session and the step left pending is resent, so the robot applies it
once and its transition reaches the journal once. The episode is then over: a resumed run starts
a new one rather than guess the robot's state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sim2real.errors import RunFailure
from sim2real.robot.journal import END, EVAL, TRAIN, Journal, Journaled, Pending, Transition
from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.protocol import HandshakeError, RemoteError, TestbedError
from sim2real.testbed.safety import SafetyShield

log = logging.getLogger(__name__)


class RobotLost(RunFailure, TestbedError):
    """The robot's link failed mid-run and did not come back within the reconnect timeout."""


class RobotLink:
    """The testbed at ``address`` for ``model``: a training env and an evaluation env, both journaled and shielded."""

    def __init__(self, address: str, model: Any, journal: Journal, counts: dict[str, int], *,
                 session: str | None, on_transition: Callable[[Transition], None] | None,
                 cut_now: Callable[[], bool], reconnect_timeout: float, max_delta: float | None = None,
                 credentials: Credentials | None = None, step_timeout: float = 2.0) -> None:
        self.address, self.model, self.journal, self.counts = address, model, journal, counts
        self.session, self.on_transition, self.cut_now = session, on_transition, cut_now
        self.reconnect_timeout, self.max_delta = float(reconnect_timeout), max_delta
        self.credentials, self.step_timeout = credentials, float(step_timeout)
        self.recoveries = 0
        self.remote: RemoteEnv | None = None
        self.train_env: SafetyShield | None = None
        self.eval_env: SafetyShield | None = None

    def open(self, first: bool = False) -> None:
        """Connect (with the journal's session); on a first connect a failure is final, later ones retry."""
        deadline = time.monotonic() + (0.0 if first else self.reconnect_timeout)
        while True:
            try:
                self.remote = RemoteEnv(self.address, expected_spaces=self.model, step_timeout=self.step_timeout,
                                        credentials=self.credentials, session=self.session)
                break
            except (HandshakeError, RemoteError):
                raise  # the server answered and refused: retrying cannot help
            except TestbedError as exc:
                if time.monotonic() >= deadline:
                    if first:
                        raise TestbedError(str(exc)) from exc
                    raise RobotLost(f"{exc}; gave up reconnecting after {self.reconnect_timeout:.0f} s: every "
                                    f"step taken is in the journal, rerun the same command to resume") from exc
                time.sleep(0.5)
        self.session = self.remote.session
        self._build_envs()

    def _build_envs(self) -> None:
        assert self.remote is not None
        train = Journaled(self.remote, self.journal, TRAIN, self.counts, self.on_transition, self.cut_now)
        evaluation = Journaled(self.remote, self.journal, EVAL, self.counts)
        self.train_env = SafetyShield(train, max_delta=self.max_delta)
        self.eval_env = SafetyShield(evaluation, max_delta=self.max_delta)

    @property
    def control_hz(self) -> float | None:
        """The server's declared control rate (None: it does not pace its steps)."""
        return None if self.remote is None else self.remote.control_hz

    def resolve(self, pending: Pending | None) -> None:
        """Resend the step a crash left pending (applied once whatever happened), then end its episode."""
        if pending is None:
            return
        assert self.remote is not None and self.train_env is not None and self.eval_env is not None
        journaled = (self.train_env if pending.phase == TRAIN else self.eval_env).env
        assert isinstance(journaled, Journaled)
        try:
            result = self.remote.resend(pending.episode, pending.seq, pending.action)
        except RemoteError as exc:
            self.journal.write(END, episode=pending.episode,
                               reason=f"step {pending.seq} was not applied ({exc.code}: {exc})")
            return
        journaled.resume_obs(pending.obs)
        journaled.record(pending.episode, pending.seq, pending.action, result)
        self.journal.write(END, episode=pending.episode, reason="resumed after a failure: a new episode starts")

    def recover(self, failure: Exception, pending: Pending | None) -> None:
        """After `failure`: reconnect (retrying up to ``reconnect_timeout``) and resolve the pending step."""
        self.recoveries += 1
        log.warning("robot link failed (%s); reconnecting to %s", failure, self.address)
        self.close()
        self.open()
        self.resolve(pending)

    def pending(self) -> Pending | None:
        """The step sent (or about to be) whose result is not journaled, from either env."""
        for env in (self.train_env, self.eval_env):
            if env is not None:
                journaled = env.env
                assert isinstance(journaled, Journaled)
                if journaled.pending is not None:
                    return journaled.pending
        return None

    def close(self) -> None:
        """Close the connection (the server holds the robot if an episode is open)."""
        if self.remote is not None:
            with contextlib.suppress(OSError):
                self.remote.close()
        self.remote = None
