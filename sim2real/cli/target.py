"""Commands on one target, local or a testbed: evaluate a policy, record episodes, fit them (sysid), adapt."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sim2real.cli.common import (
    FitHorizon,
    FitParams,
    KeyFile,
    Policy,
    Seed,
    Task,
    TaskOption,
    Testbed,
    TlsCa,
    TlsFingerprint,
    app,
    console,
    err,
    show_fit_progress,
    split_names,
    testbed_credentials,
    user_errors,
)
from sim2real.defaults import RECORD_EPISODES, ROUNDS, SIM_STEPS, SYSID_BUDGET, SYSID_HORIZON
from sim2real.formatting import count, percent


def _episode_printer(episodes: int) -> Callable[[Any], None]:
    """Print a progress line about every tenth of the episodes (evaluations can take minutes)."""
    every, seen = max(1, episodes // 10), {"done": 0, "successes": 0}

    def show(episode: Any) -> None:
        seen["done"] += 1
        seen["successes"] += int(episode.success)
        if seen["done"] % every == 0 and seen["done"] < episodes:
            console.print(f"  {seen['done']} new episodes, {seen['successes']} successful", highlight=False)

    return show


@app.command()
@user_errors
def evaluate(
    policy: Policy,
    task: TaskOption,
    target: Annotated[str, typer.Option(help="target to evaluate on")] = "source",
    episodes: Annotated[int, typer.Option(help="number of episodes")] = 100,
    seed: Seed = 0,
    testbed: Testbed = None,
    gif: Annotated[Path | None, typer.Option(help="record a GIF of a few episodes")] = None,
    out: Annotated[Path | None, typer.Option(
        help="write episodes.jsonl and summary.json here; a rerun of the same evaluation resumes")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace another evaluation already in --out")] = False,
    stochastic: Annotated[bool, typer.Option("--stochastic", help="sample actions instead of the mean")] = False,
    key_file: KeyFile = None,
    tls_ca: TlsCa = None,
    tls_fingerprint: TlsFingerprint = None,
) -> None:
    """Evaluate a policy on a target, locally or on a robot testbed over the network."""
    from sim2real import catalog
    from sim2real.policy_evaluation import evaluate_policy
    from sim2real.testbed.remote_policy import format_latency

    credentials = testbed_credentials(key_file, tls_ca, tls_fingerprint)
    summary = evaluate_policy(policy, task, target=target, episodes=episodes, seed=seed, testbed=testbed, gif=gif,
                              out=out, deterministic=not stochastic, credentials=credentials, force=force,
                              on_episode=_episode_printer(episodes))
    table = Table("metric", "value", title=f"{policy} on {testbed or f'{task}:{target}'}")
    low, high = summary.get("success_ci") or (0, 0)
    table.add_row("episodes", f"{summary['episodes']} ({summary['aborted']} aborted)")
    if summary["success_rate"] is not None:
        if catalog.load(task).threshold.metric == "success":  # a task scored by return has no success to show
            table.add_row("success rate", f"{percent(summary['success_rate'])}  (95 % CI {percent(low)}–"
                                          f"{percent(high)})")
        table.add_row("mean return", f"{summary['mean_return']:.2f}  (95 % CI {summary['return_ci'][0]:.2f}–"
                                     f"{summary['return_ci'][1]:.2f})")
        table.add_row("mean length", f"{summary['mean_length']:.1f} steps")
    if "latency_ms" in summary:
        table.add_row("latency p50 / p99", format_latency(summary["latency_ms"]))
    console.print(table)
    if out is not None:
        console.print(f"Episodes in {out / 'episodes.jsonl'}, summary in {out / 'summary.json'}")
    if summary.get("error"):
        err.print(f"[bold red]error:[/] {escape(str(summary['error']))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
@user_errors
def record(
    policy: Policy,
    task: TaskOption,
    out: Annotated[Path, typer.Option(
        help="rollout file to write (JSONL: a run header, then seed, observations, actions per episode)")],
    target: Annotated[str, typer.Option(help="target to record on (locally)")] = "source",
    episodes: Annotated[int, typer.Option(help="number of episodes")] = 20,
    seed: Seed = 0,
    testbed: Testbed = None,
    known: Annotated[str | None, typer.Option(
        help="domain values set on purpose for these episodes, NAME=NUMBER,... (e.g. a weighed payload: "
             "cargo_mass=8,cargo_height=0.1); applied on a local target, only written down on the testbed")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace another recording already in --out")] = False,
    key_file: KeyFile = None,
    tls_ca: TlsCa = None,
    tls_fingerprint: TlsFingerprint = None,
) -> None:
    """Record episodes (observations and actions, no reward) for system identification; a rerun resumes."""
    from sim2real.sysid import parse_known, record_policy, recorded_steps

    changes = parse_known(known)
    credentials = testbed_credentials(key_file, tls_ca, tls_fingerprint)
    trajectories = record_policy(policy, task, out, target=target, episodes=episodes, seed=seed, testbed=testbed,
                                 known=changes, credentials=credentials, force=force)
    steps = recorded_steps(trajectories)
    with_known = f" with {', '.join(f'{k}={v:g}' for k, v in changes.items())}" if changes else ""
    console.print(f"Recorded {count(len(trajectories), 'episode')} ({steps:,} steps) on {testbed or f'{task}:{target}'}"
                  f"{with_known} into {out}")


@app.command()
@user_errors
def sysid(
    task: Task,
    rollouts: Annotated[list[Path], typer.Option(help="recorded episodes (sim2real record, JSONL); repeat the "
                                                      "option to fit to several files together")],
    params: FitParams = None,
    budget: Annotated[int, typer.Option(help="discrepancy evaluations for CMA-ES")] = 300,
    horizon: FitHorizon = SYSID_HORIZON,
    seed: Annotated[int, typer.Option(help="seed of the optimiser")] = 0,
    out: Annotated[Path | None, typer.Option(help="output folder (default: runs/sysid-TASK)")] = None,
    policy: Annotated[str | None, typer.Option(
        help="the policy that recorded the episodes (zoo name, bundle or .zip): replay closed-loop, the "
             "policy driving the simulation, instead of the recorded actions")] = None,
    base: Annotated[str, typer.Option(
        help="target whose values the parameters not fitted take (e.g. 'fitted' of an earlier fit's YAML)")] = "source",
    latency: Annotated[int | None, typer.Option(
        help="action latency in control steps, fixed (default: fitted, 0-3)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace another fit already in --out")] = False,
) -> None:
    """Fit the task's domain parameters to recorded episodes; write a fitted target YAML and a report."""
    from sim2real import catalog
    from sim2real.sysid import claim_fit_folder, fittable, load_trajectories, prepare, solve, write_fit
    from sim2real.zoo import load_policy

    spec = catalog.load(task)
    names = split_names(params) or fittable(spec)
    show_fit_progress()
    trajectories = [trajectory for path in rollouts for trajectory in load_trajectories(path, spec)]
    driver = load_policy(policy) if policy is not None else None
    out = out or Path("runs") / f"sysid-{spec.name}"
    settings = {"params": list(names), "budget": budget, "horizon": horizon, "seed": seed, "base": base,
                "latency": latency}
    problem = prepare(spec, trajectories, names, budget=budget, seed=seed, horizon=horizon, policy=driver, base=base,
                      delay=latency)
    claim_fit_folder(out, spec, rollouts, settings, policy=policy, force=force)
    replay = "open-loop" if driver is None else f"closed-loop with {policy}"
    console.print(f"Fitting {', '.join(names)} to {count(len(trajectories), 'episode')} replayed {replay} "
                  f"({budget} evaluations)...")
    fit = solve(problem, workers=os.cpu_count() or 1)
    paths = write_fit(fit, spec, trajectories, out, driver)
    table = Table("parameter", "estimate", "search spread", "nominal",
                  title=f"{spec.name}: fitted to {', '.join(map(str, rollouts))}")
    for name, entry in fit.params.items():
        table.add_row(name, f"{entry['estimate']:.4g}", f"{entry['spread']:.2g}", f"{entry['nominal']:.4g}")
    console.print(table)
    start = "nominal" if base == "source" else f"as in {base!r}"
    console.print(f"latency {fit.action_delay_steps} steps; discrepancy {fit.discrepancy_before:.5f} {start} → "
                  f"{fit.discrepancy_after:.5f} fitted")
    console.print(f"Fitted task: {paths['task']} (target 'fitted'); report: {paths['report']}")


@app.command()
@user_errors
def adapt(
    policy: Policy,
    task: TaskOption,
    target: Annotated[str, typer.Option(help="target to adapt to (locally)")] = "real",
    testbed: Testbed = None,
    episodes: Annotated[int, typer.Option(help="target episodes to record: all the target data used")] = (
        RECORD_EPISODES),
    params: FitParams = None,
    budget: Annotated[int, typer.Option(help="discrepancy evaluations for CMA-ES")] = SYSID_BUDGET,
    horizon: FitHorizon = SYSID_HORIZON,
    sim_steps: Annotated[int, typer.Option(help="fine-tuning steps in the fitted simulator")] = SIM_STEPS,
    randomize: Annotated[bool, typer.Option(help="randomize around the fit while fine-tuning")] = True,
    rounds: Annotated[int, typer.Option(help="rounds of record, fit, fine-tune (each with the newest policy)")] = (
        ROUNDS),
    eval_episodes: Annotated[int, typer.Option(help="episodes of each evaluation on the target")] = 100,
    seed: Annotated[int, typer.Option(help="seed of recording, fit and training")] = 0,
    out: Annotated[Path | None, typer.Option(
        help="output folder (default: runs/adapt-TASK-TARGET); a rerun of the same command resumes")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace another run already in --out")] = False,
    key_file: KeyFile = None,
    tls_ca: TlsCa = None,
    tls_fingerprint: TlsFingerprint = None,
) -> None:
    """Transductive transfer: record on the target (no reward), fit the simulator, fine-tune there, evaluate."""
    from sim2real import catalog
    from sim2real.transductive import run_loop
    from sim2real.transfer import SysidFinetune

    spec = catalog.load(task)
    credentials = testbed_credentials(key_file, tls_ca, tls_fingerprint)
    show_fit_progress()
    strategy = SysidFinetune(episodes=episodes, params=split_names(params), sysid_budget=budget, horizon=horizon,
                             sim_steps=sim_steps, randomize=randomize, rounds=rounds)
    out = out or Path("runs") / f"adapt-{spec.name}-{'testbed' if testbed else target}"
    summary = run_loop(policy, spec, out, strategy=strategy, target=target, testbed=testbed,
                       eval_episodes=eval_episodes, seed=seed, on_stage=lambda message: console.print(message + "..."),
                       credentials=credentials, force=force)
    table = Table("policy", "success on the target", title=f"{spec.name}: {policy} adapted to {summary['target']}")
    for name, rate in summary["success"].items():
        table.add_row(name, f"{100 * rate:.0f} %")
    console.print(table)
    console.print(f"{summary['gain_points']:+.0f} points, from {summary['target_steps_used']:,} recorded target steps "
                  f"and no target reward; fit: " + ", ".join(f"{k} {v:.3g}" for k, v in summary["fit"].items()))
    console.print(f"Adapted policy: {summary['adapted_policy']}; summary: {out / 'summary.json'}")
    if summary["recommended"] == "pretrained":
        err.print(f"[bold red]warning:[/] the adapted policy scores {-summary['gain_points']:.0f} points below the "
                  f"pretrained one on {summary['target']}: keep using {policy}")
