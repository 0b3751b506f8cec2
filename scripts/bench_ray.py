"""`python scripts/bench_ray.py`: the same grid on a two-node Ray cluster (1 CPU each, loopback) and on the local pool.

Each run is a fresh `sim2real transfer` process, as a user starts it, so each pays its own
start-up (the local pool its fork server's imports, Ray its workers'). Prints the wall time of
each whole run (start-up, zero-shot gap and report included; local, Ray, Ray, local), the ratio
of their means, each unit's own time, the driver's
cost per unit (results of units that do nothing, and writing a unit's records), and from those a
projection of the README's far-target grid on bigger machines. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

LOOPBACK = "127.0.0.1"
# A token and loopback-only nodes, set before Ray is imported: Ray reads both when it loads.
os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                   "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})

from ray.cluster_utils import Cluster  # noqa: E402

from sim2real import catalog, experiment  # noqa: E402
from sim2real.experiment.ray_backend import RayBackend  # noqa: E402
from sim2real.records import JsonlWriter, read_jsonl  # noqa: E402

ORDER = ("local", "ray", "ray", "local")
GRID_UNITS = 3 * 6 * 10
"""The README's far-target grid: 3 targets x 6 strategies x 10 seeds."""


def _unit_seconds(run_dir: Path) -> dict[str, float]:
    """Each unit's own wall time (its last record's), by unit."""
    last: dict[str, float] = {}
    for record in read_jsonl(run_dir / experiment.RESULTS_FILE):
        last[record["unit"]] = max(last.get(record["unit"], 0.0), record["wall_seconds"])
    return last


def _record_cost(directory: Path, records: int, repeats: int = 200) -> float:
    """Seconds the driver spends writing one unit's records (and its units.jsonl line), fsynced as the harness does."""
    record = {"unit": "t/s/0", "steps": 0, "success": 0.5, "return": 1.0, "wall_seconds": 1.0, "options": {}}
    with JsonlWriter(directory / "r.jsonl") as results, JsonlWriter(directory / "u.jsonl") as units:
        started = time.perf_counter()
        for _ in range(repeats):
            for _ in range(records):
                results.write(record)
            results.fsync()
            units.write({"unit": "t/s/0", "node": "n", "versions": {}})
            units.fsync()
    return (time.perf_counter() - started) / repeats


def _nothing(shared: int, item: int) -> int:
    return shared + item


def _driver_interval(address: str, units: int = 400) -> float:
    """Seconds between results of units that do nothing, workers warm: the most units a second the driver takes."""
    finished = [time.perf_counter() for _ in RayBackend(address).run(_nothing, 0, dict.fromkeys(
        map(str, range(units)), 1))]
    warm = finished[units // 4:]
    return (warm[-1] - warm[0]) / (len(warm) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=8192)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    plan = experiment.make_plan(catalog.load("driving"), "driving-ppo-nominal", "wet", ["finetune", "scratch"],
                                seeds=args.seeds, budget=args.budget, eval_every=args.budget // 4,
                                episodes=args.episodes)
    with TemporaryDirectory(prefix="sim2real-bench-ray-") as directory:
        root = Path(directory)
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                              "include_dashboard": False})
        nodes.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        transfer = [sys.executable, "-m", "sim2real", "transfer", "driving", "--policy", "driving-ppo-nominal",
                    "--target", "wet", "--strategies", "finetune,scratch", "--seeds", str(args.seeds),
                    "--budget", str(args.budget), "--eval-every", str(args.budget // 4),
                    "--episodes", str(args.episodes)]
        backends = {"local": ["--backend", "local", "--workers", "2"],
                    "ray": ["--backend", "ray", "--address", nodes.address]}
        seconds: dict[str, list[float]] = {"local": [], "ray": []}
        try:
            for index, kind in enumerate(ORDER):  # ABBA: a drift of the machine's speed weighs on both alike
                name = f"{kind}-{index}"
                with (root / f"{name}.log").open("w") as log:
                    started = time.perf_counter()
                    done = subprocess.run([*transfer, *backends[kind], "--out", str(root / name)], stdout=log,
                                          stderr=subprocess.STDOUT)
                    seconds[kind].append(time.perf_counter() - started)
                if done.returncode:
                    raise SystemExit(f"the {kind} run failed:\n{(root / f'{name}.log').read_text()}")
            round_trip = _driver_interval(nodes.address)
        finally:
            nodes.shutdown()
        first = {kind: root / f"{kind}-{ORDER.index(kind)}" for kind in seconds}
        same = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in read_jsonl(first["ray"] / "results.jsonl")]
        reference = [{k: v for k, v in r.items() if k != "wall_seconds"}
                     for r in read_jsonl(first["local"] / "results.jsonl")]
        if len(reference) != len(plan.units()) * len(plan.steps):
            raise SystemExit(f"the runs' plan is not this bench's: {len(reference)} records")
        by_unit = _unit_seconds(first["local"])
        on_ray = _unit_seconds(first["ray"])
        writing = _record_cost(root, records=len(plan.steps))
    local, ray_seconds = (sum(seconds[kind]) / len(seconds[kind]) for kind in ("local", "ray"))
    mean_unit = sum(by_unit.values()) / len(by_unit)
    print(json.dumps({
        "units": len(plan.units()), "budget": plan.budget, "records_identical": sorted(same, key=str) == sorted(
            reference, key=str),
        "order": ORDER, "seconds_local_2_workers": [round(x, 1) for x in seconds["local"]],
        "seconds_ray_2_nodes": [round(x, 1) for x in seconds["ray"]],
        "ray_over_local": round(ray_seconds / local, 3),
        "unit_seconds_local": {unit: round(seconds, 1) for unit, seconds in by_unit.items()},
        "unit_seconds_ray": {unit: round(seconds, 1) for unit, seconds in on_ray.items()},
        "driver_ms_between_trivial_units": round(1000 * round_trip, 1),
        "driver_record_writing_ms": round(1000 * writing, 2),
    }, indent=2))
    per_unit_driver = round_trip + writing
    print(f"\nProjection for the far-target grid ({GRID_UNITS} units), per-unit time t on one core:")
    for cores in (16, 64):
        waves = math.ceil(GRID_UNITS / cores)
        print(f"  {cores} cores: {waves} waves of units; wall ≈ {waves} × t + {GRID_UNITS} × "
              f"{1000 * per_unit_driver:.1f} ms of driver time (here t ≈ {mean_unit:.0f} s for a "
              f"{plan.budget:,}-step unit)")


if __name__ == "__main__":
    main()
