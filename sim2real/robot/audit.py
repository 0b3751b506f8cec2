"""Audit a robot run against the server's applied-step log: every applied step journaled once, none twice."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sim2real.robot.journal import iter_steps
from sim2real.testbed.applied import applied_steps


@dataclass(frozen=True)
class Audit:
    """Steps the server applied, steps the client journaled, and where the two disagree."""

    applied: int
    journaled: int
    applied_twice: list[tuple[int, int]]
    journaled_twice: list[tuple[int, int]]
    lost: list[tuple[int, int]]
    invented: list[tuple[int, int]]

    @property
    def exact(self) -> bool:
        """No step applied twice, and the journal holds exactly the applied steps."""
        return not (self.applied_twice or self.journaled_twice or self.lost or self.invented)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data, with the verdict."""
        return {**asdict(self), "exact": self.exact}


def audit(applied_log: str | Path, journals: list[Path]) -> Audit:
    """Compare the server's applied-step log with the run's journals (one per unit)."""
    applied = applied_steps(applied_log)
    journaled = [(r["episode"], r["seq"]) for path in journals for r in iter_steps(path)]
    twice = sorted(step for step, count in Counter(applied).items() if count > 1)
    journaled_twice = sorted(step for step, count in Counter(journaled).items() if count > 1)
    return Audit(len(applied), len(journaled), twice, journaled_twice,
                 sorted(set(applied) - set(journaled)), sorted(set(journaled) - set(applied)))
