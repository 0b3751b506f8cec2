"""`make bench`: how much faster the harness runs the same units with 2 workers than with 1.

Units are PPO fine-tuning and scratch runs from the shipped ``driving-ppo-nominal`` on ``wet``,
two seeds each: four small units (8k target steps, ~10 s each, where worker start-up weighs
most) and four large ones (32k). The whole run is timed, start-up and report included, as a user
would see it, and the units alone (from when they are handed to the backend, worker start-up
included, to the last one's end). Each run goes in a fresh interpreter, as a user's `sim2real
transfer` does: in this process an earlier benchmark's env workers have started multiprocessing's
fork server with only the env modules, so harness workers forked from it would each import torch
and SB3 (~5 s), which no user's run pays. Other work on the machine skews the ratio: the load
average before is returned too.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from sim2real import catalog, experiment

TASK, TARGET, POLICY = "driving", "wet", "driving-ppo-nominal"


def _timed_run(plan: experiment.Plan, out: Path, workers: int) -> tuple[float, float]:
    """Seconds for the whole run and for its units (from when the first one starts to when the last one ends)."""
    marks: list[tuple[float, experiment.Progress]] = []
    started = time.perf_counter()
    experiment.run(plan, out, workers=workers, progress=lambda event: marks.append((time.perf_counter(), event)))
    total = time.perf_counter() - started
    units_start = max(when for when, event in marks if event.unit is None)
    return total, marks[-1][0] - units_start


def _timed_in_fresh_process(plan: experiment.Plan, out: Path, workers: int) -> tuple[float, float]:
    """`_timed_run` in a new interpreter ("spawn"), which shares nothing this process has started."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        return fresh.submit(_timed_run, plan, out, workers).result()


def measure_speedup(units: int = 4, budget: int = 8192, episodes: int = 5) -> dict[str, Any]:
    """Time `units` units (half finetune, half scratch) of `budget` steps with 1 and with 2 workers."""
    spec = catalog.load(TASK)
    seeds = max(1, units // 2)
    load = os.getloadavg()[0]
    with TemporaryDirectory(prefix="sim2real-bench-") as directory:
        root = Path(directory)
        plan = experiment.make_plan(spec, POLICY, TARGET, ["finetune", "scratch"], seeds=seeds, budget=budget,
                                    eval_every=budget // 2, episodes=episodes)
        one_total, one_units = _timed_in_fresh_process(plan, root / "workers-1", workers=1)
        two_total, two_units = _timed_in_fresh_process(plan, root / "workers-2", workers=2)
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
