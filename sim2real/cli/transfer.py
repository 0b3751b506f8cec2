"""`sim2real transfer` and `sim2real report`: strategies against scratch over seeds, locally, on Ray or a robot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.table import Table

from sim2real.cli.common import (
    KeyFile,
    Task,
    TlsCa,
    TlsFingerprint,
    app,
    console,
    split_names,
    testbed_credentials,
    user_errors,
)
from sim2real.errors import Sim2RealError

if TYPE_CHECKING:
    from sim2real.experiment.run_files import EvaluationRecord


@app.command()
@user_errors
def transfer(
    task: Task,
    target: Annotated[str | None, typer.Option(
        help="target to transfer to (comma-separate several); not with --testbed: the robot is the target")] = None,
    policy: Annotated[str | None, typer.Option(help="zoo name, bundle or SB3 zip (default: TASK-ALGO-nominal)")] = None,
    strategies: Annotated[str | None, typer.Option(
        help="comma-separated, each NAME or NAME:OPTION=VALUE:... e.g. residual:utd=4 (default: the task's; "
             "with --testbed: residual)")] = None,
    seeds: Annotated[int | None, typer.Option(help="seeds per strategy (default: the task's; --testbed: 1)")] = None,
    budget: Annotated[int | None, typer.Option(help="target env steps per unit (default: the task's)")] = None,
    eval_every: Annotated[int | None, typer.Option(help="target env steps between evaluations")] = None,
    episodes: Annotated[int | None, typer.Option(help="episodes per evaluation")] = None,
    workers: Annotated[int | None, typer.Option(help="parallel units (default: one per core)")] = None,
    backend: Annotated[str, typer.Option(help="local or ray")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address HOST:PORT or ray://HOST:PORT (with --backend ray; token: RAY_AUTH_TOKEN)")] = None,
    runtime_env: Annotated[str | None, typer.Option(
        help="with --backend ray: Ray runtime_env as JSON, or a .json/.yaml file holding it (pip, py_modules)")] = None,
    testbed: Annotated[str | None, typer.Option(
        help="adapt on a robot: tcp://HOST:PORT or tls://HOST:PORT of a testbed server (see sim2real serve)")] = None,
    max_delta: Annotated[float | None, typer.Option(help="--testbed: largest action change per step (shield)")] = None,
    reconnect_timeout: Annotated[float, typer.Option(
        help="--testbed: seconds to keep reconnecting after the robot link fails mid-run")] = 120.0,
    key_file: KeyFile = None,
    tls_ca: TlsCa = None,
    tls_fingerprint: TlsFingerprint = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default: runs/transfer-TASK-TARGET)")] = None,
) -> None:
    """Adapt a pretrained policy to a target with each strategy, against scratch, over seeds; then report.

    With --testbed the target is a robot: each strategy trains on it, off-policy, while it steps at its
    control rate; a rerun of the same command resumes after any crash, no step lost or repeated.
    """
    from sim2real import catalog, experiment
    from sim2real.transfer.strategies import parse_strategy

    spec = catalog.load(task)
    policy = policy or f"{spec.name}-{spec.train.algo}-nominal"
    names = split_names(strategies, "--strategies") if strategies is not None else None
    chosen = [parse_strategy(name) for name in names or ()] if names is not None else None
    if testbed is not None:
        if target is not None:
            raise Sim2RealError(f"--target {target} with --testbed: the robot is the target; drop --target")
        _transfer_on_testbed(spec, policy, testbed, chosen, seeds, budget, eval_every, episodes, max_delta,
                             reconnect_timeout, testbed_credentials(key_file, tls_ca, tls_fingerprint), out)
        return
    if target is None:
        raise Sim2RealError(f"give --target (targets of {spec.name}: {', '.join(spec.targets)}) or --testbed ADDRESS")
    targets = [t.strip() for t in target.split(",") if t.strip()]
    plan = experiment.make_plan(spec, policy, targets, chosen, seeds=seeds, budget=budget, eval_every=eval_every,
                                episodes=episodes)
    out = out or Path("runs") / f"transfer-{spec.name}-{'-'.join(targets)}"
    console.print(f"Transfer [bold]{policy}[/] → {spec.name}:{','.join(targets)}: {len(plan.units())} units, "
                  f"{plan.budget:,} steps each, evaluated every {plan.eval_every:,}")
    run_dir = experiment.run(plan, out, workers=workers, backend=backend, ray_address=address,
                             progress=progress_printer(), runtime_env=_runtime_env(runtime_env, backend))
    print_report(run_dir)


def _transfer_on_testbed(spec: Any, policy: str, testbed: str, chosen: list[Any] | None, seeds: int | None,
                         budget: int | None, eval_every: int | None, episodes: int | None, max_delta: float | None,
                         reconnect_timeout: float, credentials: Any, out: Path | None) -> None:
    """`transfer --testbed`: the plan checked, then one unit at a time on the robot."""
    from sim2real import zoo
    from sim2real.robot.plan import make_robot_plan
    from sim2real.robot.run import run_on_testbed

    defaults = spec.transfer
    algorithm = type(zoo.load_policy(policy)).__name__
    budget = defaults.budget if budget is None else budget
    plan = make_robot_plan(spec, policy, testbed, chosen or ["residual"], algorithm=algorithm,
                           seeds=1 if seeds is None else seeds, budget=budget,
                           eval_every=eval_every or max(1, budget // 4), episodes=episodes or defaults.episodes,
                           max_delta=max_delta)
    out = out or Path("runs") / f"robot-{spec.name}"
    console.print(f"Adapt [bold]{policy}[/] on the robot at {testbed}: {len(plan.units())} units, "
                  f"{plan.budget:,} robot steps each, evaluated every {plan.eval_every:,} ({plan.episodes} episodes)")

    def show(record: EvaluationRecord) -> None:
        minutes = record.extra.get("robot_minutes") or {}
        spent = f", {minutes.get('train', 0):.1f} + {minutes.get('eval', 0):.1f} robot min" if minutes else ""
        console.print(f"  {record.unit} at {record.steps:,} steps: success {100 * record.success:.0f} %"
                      f"{spent}", highlight=False)

    run_dir = run_on_testbed(plan, out, credentials=credentials, reconnect_timeout=reconnect_timeout, on_record=show)
    _print_robot_report(run_dir)


def _print_robot_report(run_dir: Path) -> None:
    from sim2real.robot.report import read_robot_report

    report = read_robot_report(run_dir / "report.json")
    table = Table("unit", "steps to threshold", "robot min to threshold", "robot min train + eval", "rate kept",
                  "stood still", title=f"{run_dir}: on the robot at {report.testbed}")
    for key, unit in report.units.items():
        minutes = unit.get("robot_minutes") or {}
        kept = unit.get("rate_kept")
        table.add_row(key, "not reached" if unit["time_to_threshold"] is None else f"{unit['time_to_threshold']:,}",
                      str(unit["robot_minutes_to_threshold"] or "—"),
                      f"{minutes.get('train', '—')} + {minutes.get('eval', '—')}",
                      "—" if kept is None else f"{100 * kept:.1f} %", f"{unit.get('stood_still_seconds', '—')} s")
    console.print(table)
    console.print(f"Report: {run_dir / 'report.md'}, figure: {run_dir / 'curves.png'}")


def _runtime_env(given: str | None, backend: str) -> dict[str, Any] | None:
    """--runtime-env: inline JSON or a JSON/YAML file holding a mapping; only with the Ray backend."""
    if given is None:
        return None
    if backend != "ray":
        raise Sim2RealError(f"--runtime-env is for --backend ray (got --backend {backend})")
    path = Path(given)
    text = path.read_text() if path.is_file() else given
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Sim2RealError(f"--runtime-env {given!r} is neither a JSON/YAML mapping nor a file holding one: "
                            f"{str(exc).splitlines()[0]}") from None
    if not isinstance(value, dict):
        raise Sim2RealError(f"--runtime-env {given!r} must be a mapping such as '{{\"pip\": [\"mypkg\"]}}' or "
                            f"a .json/.yaml file holding one")
    return value


def progress_printer() -> Callable[[Any], None]:
    def show(progress: Any) -> None:
        if progress.message:
            console.print(progress.message, highlight=False)
        if progress.unit:
            eta = f", about {progress.eta:.0f} s left" if progress.eta is not None else ""
            console.print(f"  [{progress.done}/{progress.total}] {progress.unit} done{eta}", highlight=False)

    return show


def print_report(run_dir: Path) -> None:
    from sim2real.experiment.run_files import read_report
    from sim2real.experiment.summary import (
        GAIN_COLUMNS,
        collapse_sentences,
        format_aggregate,
        gain_cells,
        negative_transfer_word,
    )

    report = read_report(run_dir / "report.json")
    table = Table(*GAIN_COLUMNS, f"final {report.metric}", "negative transfer",
                  title=f"{run_dir} (IQM [95% CI] over seeds)")
    for name, metrics in report.strategies.items():
        table.add_row(*gain_cells(name, metrics), format_aggregate(metrics["final"], report.metric),
                      "[bold red]YES[/]" if metrics.get("negative_transfer")
                      else negative_transfer_word(metrics.get("negative_transfer")))
    console.print(table)
    flagged = [name for name, metrics in report.strategies.items() if metrics.get("negative_transfer")]
    if flagged:
        console.print(f"[bold red]NEGATIVE TRANSFER:[/] {', '.join(flagged)} did worse than training from scratch "
                      f"(transfer-ratio CI wholly below 0).")
    for sentence in collapse_sentences(report.summary):
        console.print(f"[bold red]COLLAPSE:[/] {sentence}.", highlight=False)
    if report.settings.get("verdict"):
        console.print(report.settings["verdict"], highlight=False)
    console.print(f"Report: {run_dir / 'report.md'}, figures: {run_dir / 'curves.png'}, {run_dir / 'gain.png'}")


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a transfer run directory")]) -> None:
    """Regenerate report.json, report.md and the figures of a transfer run from its results.jsonl."""
    from sim2real import experiment
    from sim2real.robot.run import is_robot_run, write_robot_run_report

    if is_robot_run(run_dir):
        write_robot_run_report(run_dir)
        _print_robot_report(run_dir)
        return
    experiment.write_run_report(run_dir)
    print_report(run_dir)
