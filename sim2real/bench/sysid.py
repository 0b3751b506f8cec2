"""`make bench`: the fit of `sim2real adapt` on the warehouse, its replays spread over every core vs one.

The fit is the transductive loop's first round as the demo runs it: 10 episodes of
``grasping-ppo-nominal`` recorded on ``warehouse``, every numeric domain parameter fitted with
the default budget. The baseline in the same run is the same fit in one process; the two fits
must agree value for value (each replay resets with its recorded seed, wherever it runs).
"""

from __future__ import annotations

import os
import time
from typing import Any

from sim2real import catalog, defaults, sysid
from sim2real.factory import make_env
from sim2real.transductive import record_on_target
from sim2real.transfer import SysidFinetune
from sim2real.zoo import load_policy

TASK, TARGET, POLICY = "grasping", "warehouse", "grasping-ppo-nominal"


def measure_fit_speedup(episodes: int = defaults.RECORD_EPISODES, budget: int = defaults.SYSID_BUDGET,
                        workers: int | None = None) -> dict[str, Any]:
    """Wall seconds of one fit with `workers` processes (None: one per core) and with one, and whether they agree."""
    workers = workers or os.cpu_count() or 1
    spec = catalog.load(TASK)
    env = make_env(spec, TARGET)
    try:
        policy = load_policy(POLICY, env)
        recorded = record_on_target(policy, env, SysidFinetune(episodes=episodes))
    finally:
        env.close()
    seconds, fits = {}, {}
    for count in (workers, 1):
        started = time.perf_counter()
        fits[count] = sysid.identify(spec, recorded, sysid.fittable(spec), budget=budget, workers=count)
        seconds[count] = time.perf_counter() - started
    return {"episodes": episodes, "budget": budget, "workers": workers, "seconds_workers": seconds[workers],
            "seconds_1_worker": seconds[1], "speedup": seconds[1] / seconds[workers],
            "same_fit": fits[workers].to_dict() == fits[1].to_dict()}
