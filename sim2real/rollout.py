"""Run a policy for N seeded episodes and summarise them; optionally log each episode to disk as it ends.

Episode i is reset with seed ``seed + i``, so an evaluation is reproducible and a rerun into the
same directory resumes at the first missing episode instead of starting over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim2real.episode import Policy, play
from sim2real.intervals import mean_interval, wilson_interval
from sim2real.records import JsonlWriter, read_jsonl, write_json_atomic

EVALUATION_OUTPUTS = ("episodes.jsonl", "summary.json")
"""What `evaluate(..., out=)` writes in its folder."""


@dataclass
class Episode:
    """One finished (or aborted) episode."""

    index: int
    seed: int
    success: bool
    ret: float
    length: int
    aborted: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON line for episodes.jsonl (`return` spelled out)."""
        record = asdict(self)
        record["return"] = record.pop("ret")
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Episode:
        """Read back a line of episodes.jsonl."""
        fields = {k: record[k] for k in ("index", "seed", "success", "length")}
        return cls(**fields, ret=float(record["return"]), aborted=record.get("aborted"), info=record.get("info", {}))


def run_episode(policy: Policy, env: gym.Env, seed: int, index: int = 0, deterministic: bool = True) -> Episode:
    """Roll out one episode from ``reset(seed=seed)``; an ``info["aborted"]`` reason marks it aborted."""
    total, length, info = 0.0, 0, {}
    for step in islice(play(policy, env, seed, deterministic), 1, None):  # the steps after the reset
        total += step.reward
        length += 1
        info = step.info
    aborted = info.get("aborted")
    extra = {k: _plain(info[k]) for k in ("latency_ms",) if k in info}
    return Episode(index, seed, bool(info.get("is_success", False)) and not aborted, total, length,
                   str(aborted) if aborted else None, extra)


def run_episodes(
    policy: Policy,
    env: gym.Env,
    episodes: int,
    seed: int = 0,
    deterministic: bool = True,
    skip: Iterable[int] = (),
    on_episode: Callable[[Episode], None] | None = None,
) -> list[Episode]:
    """Run episodes 0..N-1 (seeds seed+i), skipping indices already done; call `on_episode` as each ends."""
    done = set(skip)
    results = []
    for index in range(episodes):
        if index in done:
            continue
        episode = run_episode(policy, env, seed + index, index, deterministic)
        results.append(episode)
        if on_episode is not None:
            on_episode(episode)
    return results


def summarize(episodes: list[Episode], confidence: float = 0.95) -> dict[str, Any]:
    """Success rate (Wilson CI) and mean return (t CI) over the episodes that were not aborted."""
    completed = [e for e in episodes if not e.aborted]
    n = len(completed)
    summary: dict[str, Any] = {"episodes": len(episodes), "completed": n, "aborted": len(episodes) - n}
    if n == 0:
        return {**summary, "success_rate": None, "mean_return": None, "mean_length": None}
    successes = sum(e.success for e in completed)
    returns = [e.ret for e in completed]
    return {
        **summary,
        "success_rate": successes / n,
        "success_ci": list(wilson_interval(successes, n, confidence)),
        "mean_return": float(np.mean(returns)),
        "return_ci": list(mean_interval(returns, confidence)),
        "mean_length": float(np.mean([e.length for e in completed])),
    }


def evaluate(
    policy: Policy,
    env: gym.Env,
    episodes: int,
    seed: int = 0,
    out: Path | None = None,
    deterministic: bool = True,
    extra_summary: Callable[[], Mapping[str, Any]] | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a policy; with `out`, append each episode to out/episodes.jsonl (fsynced) and resume.

    A rerun with the same `out` runs only the missing episodes, so a crash loses at most the one
    episode in flight; `summary.json` is rewritten atomically at the end.
    """
    previous: list[Episode] = []
    writer = None
    if out is not None:
        path = Path(out) / "episodes.jsonl"
        previous = [Episode.from_record(r) for r in read_jsonl(path)] if path.exists() else []
        previous = [e for e in previous if e.index < episodes]
        writer = JsonlWriter(path)

    def record(episode: Episode) -> None:
        if writer is not None:
            writer.write(episode.to_record())
            writer.fsync()
        if on_episode is not None:
            on_episode(episode)

    started = time.perf_counter()
    try:
        fresh = run_episodes(policy, env, episodes, seed, deterministic, {e.index for e in previous}, record)
    finally:
        if writer is not None:
            writer.close()
    summary = summarize(sorted(previous + fresh, key=lambda e: e.index))
    summary.update({"seed": seed, "deterministic": deterministic, "resumed": len(previous),
                    "wall_seconds": round(time.perf_counter() - started, 3)})
    if extra_summary is not None:
        summary.update(extra_summary())
    if out is not None:
        write_json_atomic(Path(out) / "summary.json", summary)
    return summary


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
