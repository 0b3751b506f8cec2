"""`sim2real demo` (the whole story on the shipped policies) and `sim2real bench` (speed against baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sim2real.cli.common import (
    app,
    console,
    user_errors,
)
from sim2real.cli.transfer import progress_printer
from sim2real.formatting import percent


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="where the page (index.md), runs, figures and GIFs go")] = Path("runs/demo"),
    workers: Annotated[int | None, typer.Option(help="parallel units (default: one per core)")] = None,
    force: Annotated[bool, typer.Option(help="replace what a demo of other settings or another version left in --out")
                     ] = False,
) -> None:
    """Every transfer lever on every far target with the shipped policies; index.md says which won where."""
    from sim2real.demo.page import PAGE, story
    from sim2real.demo.run import run_demo

    summary = run_demo(out, workers=workers, force=force, say=lambda text: console.print(f"[bold]{text}[/]"),
                       progress=progress_printer())
    for line in story(summary):
        console.print(line, markup=False, highlight=False)
    console.print(f"Done in {summary.timing()}. Open [bold]{out / PAGE}[/] first.", highlight=False)


@app.command()
@user_errors
def bench(
    harness: Annotated[bool, typer.Option(help="also time the transfer harness, 2 workers vs 1")] = True,
    offpolicy: Annotated[bool, typer.Option(help="also time one residual-SAC transfer unit of 8,000 steps")] = True,
    training: Annotated[bool, typer.Option(help="also time pretraining against the physics limit")] = True,
    pretraining_seeds: Annotated[int, typer.Option(
        help="seeds to pretrain each task to its source level, timed (0: none)")] = 5,
    fit: Annotated[bool, typer.Option(help="also time the fit of `sim2real adapt`, every core vs one")] = True,
) -> None:
    """Speed benchmarks: each a ratio against a baseline measured in the same run."""
    from sim2real.bench import run_all
    from sim2real.checks import check_count

    check_count("pretraining_seeds", pretraining_seeds, minimum=0, meaning="seeds to time pretraining over")
    console.print("Benchmarking (about 23 minutes with everything, 20 s with --no-harness --no-offpolicy "
                  "--no-training --no-fit)...")
    results = run_all(harness=harness, offpolicy=offpolicy, training=training, pretraining_seeds=pretraining_seeds,
                      fit=fit)
    table = Table("benchmark", "measured", "baseline (same run)", "ratio", "target")
    driving, grasping, testbed = results["driving"], results["grasping"], results["testbed"]
    table.add_row("driving env step", f"{driving['env_us_per_step']:.0f} µs",
                  f"{driving['raw_us_per_step']:.0f} µs in its stepSimulation calls", f"{driving['ratio']:.2f}×",
                  "≤ 1.25×")
    table.add_row("grasping env step", f"{grasping['env_us_per_step']:.0f} µs",
                  f"{grasping['raw_us_per_step']:.0f} µs in its stepSimulation calls", f"{grasping['ratio']:.2f}×", "")
    table.add_row("grasping throughput (1 core)", f"{grasping['throughput_with_resets']:,.0f} steps/s",
                  f"at {grasping['control_hz']:.0f} Hz, resets included", "", "≥ 2,000 steps/s")
    plain = testbed["plain"]
    table.add_row("testbed round trip, no key", f"p50 {plain['p50']:.3f} ms, p99 {plain['p99']:.3f} ms",
                  "env step time excluded", "", "p50 ≤ 0.3, p99 ≤ 1 ms")
    for link in ("key", "key+tls"):
        timed = testbed[link]
        table.add_row(f"testbed round trip, {link}", f"p50 {timed['p50']:.3f} ms, p99 {timed['p99']:.3f} ms",
                      f"no key: p50 {plain['p50']:.3f} ms", f"{timed['p50'] / plain['p50']:.2f}×", "")
    table.add_row("authentication work per step", f"{results['auth_us_per_step']:.1f} µs",
                  "tag and check STEP and STEP_OK", "", "≤ 10 µs")
    for task, measured in results.get("training", {}).items():
        limit = measured["physics_limit"]
        for algo in ("ppo", "sac"):
            run = measured[algo]
            table.add_row(f"{algo.upper()} training, {task} ({run['n_envs']} env{'s' if run['n_envs'] > 1 else ''})",
                          f"{run['steps_per_second']:,.0f} steps/s: waiting for envs {percent(run['env_wait_share'])}, "
                          f"updates {percent(run['update_share'])}, the rest {percent(run['other_share'])}",
                          f"physics limit {limit:,.0f} steps/s (one env per core); the same envs alone "
                          f"{run['env_only_steps_per_second']:,.0f}", f"{percent(run['steps_per_second'] / limit)}",
                          "≥ 50 %" if algo == "ppo" else "")
    for task, timing in results.get("pretraining", {}).items():
        steps = [run["steps"] for run in timing["runs"] if run["steps"] is not None]
        spread = f"{min(steps):,}–{max(steps):,} steps" if steps else "never"
        level = timing["stop_at"] and next(iter(timing["stop_at"].values()))
        checked = [run["source_success"] for run in timing["runs"]]
        table.add_row(f"pretraining {task} to {percent(level)} source success",
                      f"median {timing['median_seconds']:.0f} s, worst {timing['worst_seconds']:.0f} s",
                      f"{timing['reached']} of {len(timing['runs'])} seeds got there ({spread}); then "
                      f"{percent(min(checked))}–{percent(max(checked))} on {timing['check_episodes']} episodes", "",
                      "≤ 30 s" if task == "driving" else "≤ 60 s")
    for budget, speed in results.get("harness", {}).items():
        table.add_row(f"harness, 4 driving units of {budget:,} steps",
                      f"{speed['seconds_2_workers']:.1f} s with 2 workers", f"{speed['seconds_1_worker']:.1f} s with 1",
                      f"{speed['speedup']:.2f}×",
                      "≥ 1.7×" if budget < 20000 else "≥ 1.85×")
    if "offpolicy" in results:
        unit = results["offpolicy"]
        table.add_row(f"residual SAC unit, {unit['steps']:,} steps, utd {unit['utd']} (1 core)",
                      f"{unit['seconds']:.1f} s: updates {unit['update_seconds']:.1f}, env {unit['env_seconds']:.1f}, "
                      f"other {unit['other_seconds']:.1f}", f"{unit['env_only_seconds']:.1f} s env steps alone",
                      f"{unit['ratio']:.1f}×", "")
    if "fit" in results:
        timed = results["fit"]
        table.add_row(f"sysid fit, {timed['episodes']} warehouse episodes, budget {timed['budget']}",
                      f"{timed['seconds_workers']:.1f} s with {timed['workers']} workers"
                      + ("" if timed["same_fit"] else " (A DIFFERENT FIT)"),
                      f"{timed['seconds_1_worker']:.1f} s with 1", f"{timed['speedup']:.2f}×", "the same fit")
    console.print(table)
