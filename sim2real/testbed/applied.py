"""The server's log of applied steps: what the robot did, on disk before the client hears of it.

Each reset and each executed step is appended (JSONL, one write per record, so a killed server
loses nothing it has answered) *before* the reply leaves the server; a step's record carries the
reply's bytes. A server restarted on the same log therefore (1) numbers its episodes on from the
last one, so (episode, seq) never repeats across restarts, and (2) still answers a client that
resends the last step it sent before the crash: with the logged reply if the step was applied,
with "episode over" if it was not. The env itself is not carried over (the robot rebooted), so
that episode is over either way. The log is fsynced every ``fsync_every`` seconds.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim2real.records import JsonlWriter, read_jsonl

RESET_RECORD, STEP_RECORD, BOOT_RECORD = "reset", "step", "boot"


@dataclass(frozen=True)
class LastStep:
    """Where the log left off: the last episode, its session, its last applied step and that step's reply."""

    episode: int
    session: str
    seq: int
    reply: bytes | None


class AppliedLog:
    """Append resets and applied steps to a JSONL file; recover where a previous server left off."""

    def __init__(self, path: str | Path, fsync_every: float = 1.0) -> None:
        self.path = Path(path)
        self.last = last_step(read_jsonl(self.path)) if self.path.exists() else None
        self._writer = JsonlWriter(self.path, fsync_every=fsync_every)
        self._writer.write({"type": BOOT_RECORD, "time": time.time()})

    def reset(self, episode: int, session: str) -> None:
        """An episode began (the env was reset for `session`)."""
        self._writer.write({"type": RESET_RECORD, "episode": episode, "session": session})

    def step(self, episode: int, seq: int, action: Any, reply: bytes) -> None:
        """Step `seq` of `episode` was applied with `action` (plain data) and answered with `reply`."""
        self._writer.write({"type": STEP_RECORD, "episode": episode, "seq": seq, "action": action,
                      "reply": base64.b64encode(reply).decode("ascii")})

    def close(self) -> None:
        """Fsync and close."""
        self._writer.close()


def last_step(records: list[dict[str, Any]]) -> LastStep | None:
    """The state a restarted server resumes from: the last episode begun and its last applied step."""
    last: LastStep | None = None
    for record in records:
        if record["type"] == RESET_RECORD:
            last = LastStep(record["episode"], record["session"], 0, None)
        elif record["type"] == STEP_RECORD and last is not None and record["episode"] == last.episode:
            last = LastStep(last.episode, last.session, record["seq"], base64.b64decode(record["reply"]))
    return last


def applied_steps(path: str | Path) -> list[tuple[int, int]]:
    """Every (episode, seq) the log says was applied, in order (for audits: none may appear twice)."""
    return [(r["episode"], r["seq"]) for r in read_jsonl(path) if r["type"] == STEP_RECORD]
