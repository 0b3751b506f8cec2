"""`make bench`: how much faster the harness runs the same units with 2 workers than with 1.

Units are PPO fine-tuning and scratch runs of 32k steps on the pendulum example (a policy
pretrained for a few seconds): ~27 s each, since each worker's ~3 s of start-up would dominate
units of a few seconds. The whole run is timed, start-up and report included, as a user would see it, and the
units alone (from when they are handed to the backend, worker start-up included, to the last
one's end). Other work on the machine skews the ratio: the load average before is returned too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sim2real import catalog
from sim2real.evaluation import harness
from sim2real.training import train

TASK = "pendulum"
TARGET = "heavy"
PRETRAIN = {"n_steps": 256, "batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}}


def _timed_run(plan: harness.Plan, out: Path, workers: int) -> tuple[float, float]:
    """Seconds for the whole run and for its units (from when the first one starts to when the last one ends)."""
    marks: list[tuple[float, harness.Progress]] = []
    started = time.perf_counter()
    harness.run(plan, out, workers=workers, progress=lambda event: marks.append((time.perf_counter(), event)))
    total = time.perf_counter() - started
    units_start = max(when for when, event in marks if event.unit is None)
    return total, marks[-1][0] - units_start


def measure_speedup(units: int = 4, budget: int = 32768, episodes: int = 3) -> dict[str, Any]:
    """Time `units` small units (half finetune, half scratch) with 1 and with 2 workers: seconds and ratios."""
    spec = catalog.load(TASK)
    seeds = max(1, units // 2)
    load = os.getloadavg()[0]
    with TemporaryDirectory(prefix="sim2real-bench-") as directory:
        root = Path(directory)
        policy = root / "policy"
        train(spec, algo="ppo", steps=2048, n_envs=1, hyperparameters=PRETRAIN, eval_episodes=episodes,
              card_episodes=episodes, out=policy)
        plan = harness.make_plan(spec, policy, TARGET, ["finetune", "scratch"], seeds=seeds, budget=budget,
                                 eval_every=budget // 2, episodes=episodes)
        one_total, one_units = _timed_run(plan, root / "workers-1", workers=1)
        two_total, two_units = _timed_run(plan, root / "workers-2", workers=2)
    return {
        "task": TASK,
        "units": 2 * seeds,
        "budget": budget,
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load, 2),
        "seconds_1_worker": round(one_total, 2),
        "seconds_2_workers": round(two_total, 2),
        "speedup": round(one_total / two_total, 2),
        "units_seconds_1_worker": round(one_units, 2),
        "units_seconds_2_workers": round(two_units, 2),
        "units_speedup": round(one_units / two_units, 2),
    }
