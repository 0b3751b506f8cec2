"""`sim2real train` and `sim2real zoo`: pretrain a policy into a bundle, list and show the shipped ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sim2real.cli.common import (
    Task,
    app,
    console,
    user_errors,
    zoo_app,
)
from sim2real.formatting import percent, score


@app.command()
@user_errors
def train(
    task: Task,
    target: Annotated[str | None, typer.Option(help="domain to train in (default: source, the nominal one)")] = None,
    randomize: Annotated[bool, typer.Option("--randomize", help="domain randomization during training")] = False,
    algo: Annotated[str | None, typer.Option(help="ppo or sac (default: the task's)")] = None,
    steps: Annotated[int | None, typer.Option(help="env steps to train, >= 1 (default: the task's)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed, 0 to 2**32-1 (default: 0)")] = None,
    out: Annotated[Path | None, typer.Option(help="bundle directory (default: runs/TASK-ALGO-dr|nominal)")] = None,
    n_envs: Annotated[int | None, typer.Option(help="parallel envs, >= 1 (default: the task's)")] = None,
    episodes: Annotated[int, typer.Option(help="episodes per target for the card, >= 1")] = 100,
    force: Annotated[bool, typer.Option("--force", help="replace a bundle already at --out")] = False,
    continue_from: Annotated[Path | None, typer.Option(
        "--continue", help="a bundle to train --steps further (its settings kept; written back to it unless --out)")
    ] = None,
    stop_at: Annotated[float | None, typer.Option(
        help="end training at the first evaluation reaching this success rate (or return) (default: the task's)")
    ] = None,
    all_steps: Annotated[bool, typer.Option("--all-steps", help="train every --steps step, no early stop")] = False,
    tensorboard: Annotated[Path, typer.Option(help="TensorBoard log folder")] = Path("runs/tensorboard"),
) -> None:
    """Pretrain a policy and write a bundle (model.zip, card.json, card.md); or continue training one."""
    from sim2real import catalog
    from sim2real.training import plan_training, run_training

    spec = catalog.load(task)
    if out is None:
        kind = "dr" if randomize else "nominal"
        out = continue_from or Path("runs") / f"{spec.name}-{algo or spec.train.algo}-{kind}"
    request = plan_training(spec, target=target, randomize=randomize or None, algo=algo, steps=steps, seed=seed,
                            out=out, n_envs=n_envs, card_episodes=episodes, force=force, continue_from=continue_from,
                            stop_at=stop_at, all_steps=all_steps)

    def report(steps_done: int, summary: dict[str, Any]) -> None:
        shown = score(spec.threshold.metric, summary["success_rate"], summary["mean_return"])
        console.print(f"  {steps_done:>8,} steps: {shown}")

    further = f" from {continue_from} ({request.continues['train_steps']:,} steps)" if request.continues else ""
    stop = request.stop_at
    until = ""
    if stop is not None:
        level = f"{percent(stop.value)} success" if stop.metric == "success" else f"a return of {stop.value:g}"
        until = f", until an evaluation reaches {level}"
    console.print(f"Training {request.algo.upper()} on [bold]{spec.name}[/] ({request.target}"
                  f"{', randomized' if request.randomize else ''}) for up to {request.steps:,} steps{further}{until}")
    result = run_training(request, progress_bar=sys.stdout.isatty(), on_eval=report, tensorboard_log=tensorboard)
    _print_card(result.card)
    console.print(f"Bundle written to [bold]{out}[/] (training {result.card['wall_seconds']:.0f} s with its "
                  f"evaluations, then the card's {len(result.card['targets'])} targets "
                  f"{result.card['card_seconds']:.0f} s)")


@zoo_app.command("list")
@user_errors
def zoo_list() -> None:
    """List the shipped policies with their source success."""
    from sim2real.zoo import list_zoo, load_card

    table = Table("name", "task", "algo", "randomized", "train steps", "source success")
    for name in list_zoo():
        card = load_card(name)
        table.add_row(name, card["task"], card["algo"], str(card["randomized"]), f"{card['train_steps']:,}",
                      f"{percent(card['source_success'])}")
    console.print(table)


@zoo_app.command("show")
@user_errors
def zoo_show(policy: Annotated[str, typer.Argument(help="zoo name or bundle directory")]) -> None:
    """Show a policy's card."""
    from sim2real.zoo import load_card

    card = load_card(policy)
    _print_card(card)


def _print_card(card: dict[str, Any]) -> None:
    by_return = card.get("metric") == "return"
    columns = ("target", "kind", "mean return") if by_return else ("target", "kind", "success", "mean return")
    table = Table(*columns, title=f"{card.get('name', '')} ({card['algo']})")
    for name, result in card["targets"].items():
        success = () if by_return else (percent(result["success"]),)
        table.add_row(name, result.get("kind", ""), *success, f"{result['return']:.2f}")
    console.print(table)
