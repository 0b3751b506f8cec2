"""demo.json as a typed record: the settings a demo ran with, what each lever did, where its files are."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim2real.demo.levers import LeverResult
from sim2real.errors import Sim2RealError

SUMMARY_FILE = "demo.json"
"""The demo's record, in its folder."""


@dataclass(frozen=True)
class DemoSummary:
    """demo.json: the settings the demo ran with, each lever's result per target, its runs' folders, its GIFs.

    `wall_seconds` is this invocation's time; `resumed` says whether it went on from an earlier
    one's outputs, so its time is not the demo's (the README takes its numbers from an unresumed run).
    `stages` splits that time: the wall seconds of each stage of this process, in order (the
    testbed run, in the background, shows as the wait for it).
    """

    settings: dict[str, Any]
    levers: tuple[LeverResult, ...]
    runs: dict[str, str]
    gifs: tuple[str, ...]
    wall_seconds: float
    resumed: bool = False
    stages: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data for demo.json."""
        return {"settings": self.settings, "levers": [lever.to_json() for lever in self.levers], "runs": self.runs,
                "gifs": list(self.gifs), "wall_seconds": self.wall_seconds, "resumed": self.resumed,
                "stages": self.stages}

    def timing(self) -> str:
        """The wall time and where it went, in one line ("1181 s: zero-shot 41 s, ...")."""
        split = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in self.stages.items())
        return f"{self.wall_seconds:.0f} s" + (f" ({split})" if split else "")

    @classmethod
    def from_json(cls, data: Any, where: str) -> DemoSummary:
        """A summary read back from demo.json; an error naming `where` and what is missing."""
        keys = ("settings", "levers", "runs", "gifs", "wall_seconds")
        if not (isinstance(data, Mapping) and all(key in data for key in keys)):
            raise Sim2RealError(f"{where} is not a demo summary (a JSON object with {', '.join(keys)})")
        return cls(dict(data["settings"]), tuple(LeverResult.from_json(lever) for lever in data["levers"]),
                   dict(data["runs"]), tuple(data["gifs"]), float(data["wall_seconds"]),
                   bool(data.get("resumed", False)),
                   {str(stage): float(seconds) for stage, seconds in data.get("stages", {}).items()})


def read_summary(path: Path) -> DemoSummary:
    """The demo.json at `path`, checked."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise Sim2RealError(f"cannot read the demo summary {path}: {error}") from None
    return DemoSummary.from_json(data, str(path))
