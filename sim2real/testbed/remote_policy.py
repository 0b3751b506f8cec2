"""Evaluate a policy on a robot testbed: RemoteEnv behind a SafetyShield, episodes on disk as they end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.rollout import Episode, evaluate
from sim2real.spec import TaskSpec
from sim2real.testbed.client import RemoteEnv
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.protocol import TestbedError
from sim2real.testbed.safety import SafetyShield
from sim2real.zoo import load_policy


def evaluate_on_testbed(
    policy: str | Path,
    spec: TaskSpec,
    address: str,
    *,
    episodes: int,
    seed: int = 0,
    out: Path | None = None,
    deterministic: bool = True,
    max_delta: float | None = None,
    step_timeout: float = 2.0,
    credentials: Credentials | None = None,
    on_episode: Callable[[Episode], None] | None = None,
) -> dict[str, Any]:
    """Run `episodes` on the testbed at `address`; a lost server raises TestbedError with finished episodes kept.

    The policy's spaces are checked against the server's in the handshake; every action passes the
    shield (finite, within bounds, at most `max_delta` change per step). With `out`, a rerun resumes.
    """
    model = load_policy(policy)
    remote, env = connect(address, model, max_delta=max_delta, step_timeout=step_timeout, credentials=credentials)
    try:
        summary = evaluate(model, env, episodes, seed=seed, out=out, deterministic=deterministic, on_episode=on_episode,
                           extra_summary=lambda: {"latency_ms": latency_percentiles(remote.latencies_ms),
                                                  "policy": str(policy), "task": spec.name, "testbed": address})
    except TestbedError as exc:
        where = f"; finished episodes are in {out / 'episodes.jsonl'}, rerun to resume" if out else ""
        raise TestbedError(f"testbed {address}: {exc}{where}") from exc
    finally:
        env.close()
    return summary


def connect(address: str, model: Any, max_delta: float | None = None, step_timeout: float = 2.0,
            credentials: Credentials | None = None) -> tuple[RemoteEnv, SafetyShield]:
    """The testbed at `address` for `model` (spaces checked in the handshake), and the same behind a SafetyShield."""
    remote = RemoteEnv(address, expected_spaces=model, step_timeout=step_timeout, credentials=credentials)
    return remote, SafetyShield(remote, max_delta=max_delta)


def format_latency(latency: dict[str, float | None]) -> str:
    """p50 / p99 in ms, or why there is none (every episode was resumed from disk, none was timed)."""
    if latency["p50"] is None:
        return "none timed (every episode resumed from disk)"
    return f"{latency['p50']:.3f} / {latency['p99']:.3f} ms"


def latency_percentiles(latencies_ms: list[float] | Any) -> dict[str, float | None]:
    """p50 and p99 of the step round trips, in milliseconds."""
    values = np.asarray(list(latencies_ms), dtype=float)
    if values.size == 0:
        return {"p50": None, "p99": None}
    return {"p50": round(float(np.percentile(values, 50)), 4), "p99": round(float(np.percentile(values, 99)), 4)}
