"""The `sim2real` command line: parses arguments and calls the library; bad input → one line, exit code 2."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim2real.catalog import available
from sim2real.defaults import RECORD_EPISODES, ROUNDS, SIM_STEPS, SYSID_BUDGET, SYSID_HORIZON
from sim2real.errors import Sim2RealError
from sim2real.formatting import count, percent, score

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials

def _flag_type_hidden(display: Callable[..., str | None]) -> Callable[..., str | None]:
    """Typer 0.29 shows `<bool>` beside on/off flags (even --help), as if they took a value; show nothing."""

    @functools.wraps(display)
    def shown(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else display(self, ctx)

    return shown


typer.core.TyperOption.display_type_rich = _flag_type_hidden(typer.core.TyperOption.display_type_rich)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Pretrain in PyBullet, transfer to shifted targets, measure the gain.")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped pretrained policies.")
app.add_typer(zoo_app, name="zoo")
testbed_app = typer.Typer(no_args_is_help=True, help="Keys and certificates of the robot testbed link.")
app.add_typer(testbed_app, name="testbed")
console = Console(width=None if sys.stdout.isatty() else 120, emoji=False)  # logs and pipes get full tables
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from sim2real.rundir import package_version

        console.print(f"sim2real {package_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Pretrain in PyBullet, transfer to shifted targets, measure the gain."""


def user_errors(function: F) -> F:
    """Turn a Sim2RealError into a one-line message on stderr and exit code 2 (no traceback)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (Sim2RealError, FileNotFoundError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


Task = Annotated[str, typer.Argument(help=f"catalogue name ({', '.join(available())}) or a path to a task YAML")]
TaskOption = Annotated[str, typer.Option(help="catalogue name or task YAML")]
Policy = Annotated[str, typer.Argument(help="zoo name, bundle directory or SB3 .zip")]
Seed = Annotated[int, typer.Option(help="seed of the first episode (episode i uses seed+i)")]
FitParams = Annotated[str | None, typer.Option(help="comma-separated parameters to fit (default: all numeric)")]
FitHorizon = Annotated[int, typer.Option(help="control steps of each episode compared")]
Testbed = Annotated[str | None, typer.Option(help="tcp://HOST:PORT or tls://HOST:PORT of a testbed server")]
KeyFile = Annotated[Path | None, typer.Option(
    envvar="SIM2REAL_TESTBED_KEY_FILE", help="the testbed's shared key file (sim2real testbed keygen)")]
TlsCa = Annotated[Path | None, typer.Option(
    envvar="SIM2REAL_TESTBED_CA", help="tls://: CA file that signed the testbed's certificate")]
TlsFingerprint = Annotated[str | None, typer.Option(
    envvar="SIM2REAL_TESTBED_FINGERPRINT", help="tls://: the testbed certificate's pinned SHA-256 fingerprint")]


def _credentials(key_file: Path | None, tls_ca: Path | None, tls_fingerprint: str | None) -> Credentials:
    """The client's Credentials from the testbed options (read before anything else runs)."""
    from sim2real.testbed.credentials import Credentials

    return Credentials.load(key_file, tls_ca, tls_fingerprint)


def _show_fit_progress() -> None:
    """Print the CMA-ES fit's progress (the library logs a line per generation) on the console."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("sim2real.sysid")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False, show_level=False))
        logger.setLevel(logging.INFO)


def _names(text: str | None, option: str = "--params") -> tuple[str, ...] | None:
    """A comma-separated list as a tuple of names; None when the option was not given, an error when it is empty."""
    if text is None:
        return None
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise Sim2RealError(f"{option} {text!r} names nothing; give comma-separated names, or leave the option out "
                            f"for the default")
    return names


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


def _episode_printer(episodes: int) -> Callable[[Any], None]:
    """Print a progress line about every tenth of the episodes (evaluations can take minutes)."""
    every, seen = max(1, episodes // 10), {"done": 0, "successes": 0}

    def show(episode: Any) -> None:
        seen["done"] += 1
        seen["successes"] += int(episode.success)
        if seen["done"] % every == 0 and seen["done"] < episodes:
            console.print(f"  {seen['done']} new episodes, {seen['successes']} successful", highlight=False)

    return show


def _print_card(card: dict[str, Any]) -> None:
    by_return = card.get("metric") == "return"
    columns = ("target", "kind", "mean return") if by_return else ("target", "kind", "success", "mean return")
    table = Table(*columns, title=f"{card.get('name', '')} ({card['algo']})")
    for name, result in card["targets"].items():
        success = () if by_return else (percent(result["success"]),)
        table.add_row(name, result.get("kind", ""), *success, f"{result['return']:.2f}")
    console.print(table)


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
    from sim2real.evaluate import evaluate_policy
    from sim2real.testbed.evaluation import format_latency

    credentials = _credentials(key_file, tls_ca, tls_fingerprint)
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
    credentials = _credentials(key_file, tls_ca, tls_fingerprint)
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
    names = _names(params) or fittable(spec)
    _show_fit_progress()
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
    fit = solve(problem)
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
    credentials = _credentials(key_file, tls_ca, tls_fingerprint)
    _show_fit_progress()
    strategy = SysidFinetune(episodes=episodes, params=_names(params), sysid_budget=budget, horizon=horizon,
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


@app.command()
@user_errors
def serve(
    task: Task,
    target: Annotated[str, typer.Option(help="domain the stand-in simulates ('real': the physical stand-in)")] = "real",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 0-65535 (0: any free port, printed)")] = 5555,
    hold_after: Annotated[float, typer.Option(help="seconds of client silence before the safe hold")] = 0.5,
    key_file: Annotated[Path | None, typer.Option(
        envvar="SIM2REAL_TESTBED_KEY_FILE", help="shared key file: only clients holding it may drive the env")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve tls:// (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="serve a non-loopback host WITHOUT a key: anyone who reaches it can drive the env")] = False,
    realtime: Annotated[bool, typer.Option(
        "--realtime", help="step at the env's control period (grasping 24 Hz, driving 25 Hz) as a robot")] = False,
    applied_log: Annotated[Path | None, typer.Option(
        help="JSONL log of every applied step; a server restarted on it resumes episode numbering and answers "
             "the resend of the last step")] = None,
) -> None:
    """Serve a task's target as a testbed stand-in (the same protocol a real robot's server speaks)."""
    import functools
    import logging

    from sim2real import catalog
    from sim2real.factory import make_env
    from sim2real.testbed.server import TestbedServer, server_security

    spec = catalog.load(task)
    spec.target(target)
    key, tls = server_security(key_file, tls_cert, tls_key)
    server = TestbedServer(functools.partial(make_env, spec, target), host, port, hold_after, key=key, tls=tls,
                           insecure=insecure, realtime=realtime, applied_log=applied_log)
    guard = "key required" if key else "[bold red]NO KEY[/]: anyone who reaches the port can drive it"
    pace = ", in real time" if realtime else ""
    console.print(f"Serving [bold]{spec.name}:{target}[/] on {'tls' if tls else 'tcp'}://{host}:{port}{pace}, {guard} "
                  f"(Ctrl-C to stop)")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")  # refusals, with the peer, on stderr
    logging.getLogger("sim2real.testbed").setLevel(logging.INFO)
    server.serve_forever(on_ready=lambda bound: console.print(f"LISTENING {bound}"))


@testbed_app.command("keygen")
@user_errors
def testbed_keygen(
    path: Annotated[Path, typer.Argument(help="key file to write (owner-only permissions)")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing key file")] = False,
) -> None:
    """Write a fresh random shared key; give the same file to `serve --key-file` and to every client."""
    from sim2real.testbed.auth import generate_key_file

    generate_key_file(path, overwrite=force)
    console.print(f"Key written to {path} (mode 600). Copy it to the robot's server and to each client over a "
                  f"trusted channel; never commit it.")


@testbed_app.command("selfsign")
@user_errors
def testbed_selfsign(
    cert: Annotated[Path, typer.Argument(help="certificate file to write (PEM)")],
    key: Annotated[Path, typer.Argument(help="its private key file to write (PEM, mode 600)")],
    host: Annotated[list[str], typer.Option(help="a name or IP address clients connect to (repeat for more)")],
    days: Annotated[int, typer.Option(help="days the certificate is valid")] = 365,
) -> None:
    """Make a self-signed certificate for `serve --tls-cert/--tls-key`; clients pin the fingerprint it prints."""
    from sim2real.testbed.tls import self_signed_certificate

    fingerprint = self_signed_certificate(cert, key, host, days)
    console.print(f"Certificate {cert}, key {key}. Clients connect with tls://{host[0]}:PORT and "
                  f"--tls-fingerprint {fingerprint}", highlight=False, soft_wrap=True)


@testbed_app.command("fingerprint")
@user_errors
def testbed_fingerprint(cert: Annotated[Path, typer.Argument(help="the server's PEM certificate")]) -> None:
    """Print a certificate's SHA-256 fingerprint, for clients to pin with --tls-fingerprint."""
    from sim2real.testbed.tls import certificate_fingerprint

    console.print(certificate_fingerprint(cert), highlight=False, soft_wrap=True)


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
    from sim2real import catalog
    from sim2real.evaluation import harness
    from sim2real.transfer.strategies import parse_strategy

    spec = catalog.load(task)
    policy = policy or f"{spec.name}-{spec.train.algo}-nominal"
    chosen = [parse_strategy(s) for s in _names(strategies, "--strategies") or ()] if strategies is not None else None
    if testbed is not None:
        if target is not None:
            raise Sim2RealError(f"--target {target} with --testbed: the robot is the target; drop --target")
        _transfer_on_testbed(spec, policy, testbed, chosen, seeds, budget, eval_every, episodes, max_delta,
                             reconnect_timeout, _credentials(key_file, tls_ca, tls_fingerprint), out)
        return
    if target is None:
        raise Sim2RealError(f"give --target (targets of {spec.name}: {', '.join(spec.targets)}) or --testbed ADDRESS")
    targets = [t.strip() for t in target.split(",") if t.strip()]
    plan = harness.make_plan(spec, policy, targets, chosen, seeds=seeds, budget=budget, eval_every=eval_every,
                             episodes=episodes)
    out = out or Path("runs") / f"transfer-{spec.name}-{'-'.join(targets)}"
    console.print(f"Transfer [bold]{policy}[/] → {spec.name}:{','.join(targets)}: {len(plan.units())} units, "
                  f"{plan.budget:,} steps each, evaluated every {plan.eval_every:,}")
    run_dir = harness.run(plan, out, workers=workers, backend=backend, ray_address=address,
                          progress=_progress_printer(), runtime_env=_runtime_env(runtime_env, backend))
    _print_report(run_dir)


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

    def show(record: dict[str, Any]) -> None:
        minutes = record.get("robot_minutes") or {}
        spent = f", {minutes.get('train', 0):.1f} + {minutes.get('eval', 0):.1f} robot min" if minutes else ""
        console.print(f"  {record['unit']} at {record['steps']:,} steps: success {100 * record['success']:.0f} %"
                      f"{spent}", highlight=False)

    run_dir = run_on_testbed(plan, out, credentials=credentials, reconnect_timeout=reconnect_timeout, on_record=show)
    _print_robot_report(run_dir)


def _print_robot_report(run_dir: Path) -> None:
    data = json.loads((run_dir / "report.json").read_text())
    table = Table("unit", "steps to threshold", "robot min to threshold", "robot min train + eval", "rate kept",
                  "stood still", title=f"{run_dir}: on the robot at {data['testbed']}")
    for key, unit in data["units"].items():
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


def _progress_printer() -> Callable[[Any], None]:
    def show(progress: Any) -> None:
        if progress.message:
            console.print(progress.message, highlight=False)
        if progress.unit:
            eta = f", about {progress.eta:.0f} s left" if progress.eta is not None else ""
            console.print(f"  [{progress.done}/{progress.total}] {progress.unit} done{eta}", highlight=False)

    return show


def _print_report(run_dir: Path) -> None:
    from sim2real.evaluation.report import format_aggregate, negative_transfer_word

    data = json.loads((run_dir / "report.json").read_text())
    table = Table("strategy", "sample-efficiency gain", "transfer ratio", "jumpstart", f"final {data['metric']}",
                  "negative transfer", title=f"{run_dir} (IQM [95% CI] over seeds)")
    for name, metrics in data["strategies"].items():
        table.add_row(name, format_aggregate(metrics, "sample_efficiency_gain", "×"),
                      format_aggregate(metrics, "transfer_ratio"), format_aggregate(metrics, "jumpstart"),
                      format_aggregate(metrics["final"], data["metric"]),
                      "[bold red]YES[/]" if metrics.get("negative_transfer")
                      else negative_transfer_word(metrics.get("negative_transfer")))
    console.print(table)
    flagged = [name for name, metrics in data["strategies"].items() if metrics.get("negative_transfer")]
    if flagged:
        console.print(f"[bold red]NEGATIVE TRANSFER:[/] {', '.join(flagged)} did worse than training from scratch "
                      f"(transfer-ratio CI wholly below 0).")
    if data.get("settings", {}).get("verdict"):
        console.print(data["settings"]["verdict"], highlight=False)
    console.print(f"Report: {run_dir / 'report.md'}, figures: {run_dir / 'curves.png'}, {run_dir / 'gain.png'}")


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="a transfer run directory")]) -> None:
    """Regenerate report.json, report.md and the figures of a transfer run from its results.jsonl."""
    from sim2real.evaluation import harness
    from sim2real.robot.run import is_robot_run, write_robot_run_report

    if is_robot_run(run_dir):
        write_robot_run_report(run_dir)
        _print_robot_report(run_dir)
        return
    harness.write_run_report(run_dir)
    _print_report(run_dir)


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="where the report, figures and GIFs go")] = Path("runs/demo"),
    workers: Annotated[int | None, typer.Option(help="parallel units (default: one per core)")] = None,
) -> None:
    """The whole story on the shipped policies: zero-shot table, transfer experiments, testbed, figures, GIFs."""
    from sim2real.demo import run_demo
    from sim2real.testbed.evaluation import format_latency

    summary = run_demo(out, workers=workers, say=lambda text: console.print(f"[bold]{text}[/]"),
                       progress=_progress_printer())
    kinds_shown = ("source", "near", "far", "real", "task")
    table = Table("policy", *kinds_shown, title="Zero-shot success (deterministic policy)")
    by_policy: dict[str, dict[str, float]] = {}
    for row in summary["zero_shot"]:
        by_policy.setdefault(row["policy"], {})[row["kind"]] = row["success"]
    for name, kinds in by_policy.items():
        table.add_row(name, *(f"{percent(kinds[k])}" if k in kinds else "—" for k in kinds_shown))
    console.print(table)
    for data in summary["transfer"].values():
        _print_report(Path(data["run_dir"]))
    testbed = summary["testbed"]
    console.print(f"Testbed: success {percent(testbed['success_rate'])} over {count(testbed['episodes'], 'episode')}, "
                  f"round trip p50 / p99 {format_latency(testbed['latency_ms'])}")
    console.print(f"Done in {summary['wall_seconds']:.0f} s. Open [bold]{out / 'report.md'}[/].")


@app.command()
@user_errors
def bench(
    harness: Annotated[bool, typer.Option(help="also time the transfer harness, 2 workers vs 1")] = True,
    offpolicy: Annotated[bool, typer.Option(help="also time one residual-SAC transfer unit of 8,000 steps")] = True,
    training: Annotated[bool, typer.Option(help="also time pretraining against the physics limit")] = True,
    pretraining_seeds: Annotated[int, typer.Option(
        help="seeds to pretrain each task to its source level, timed (0: none)")] = 5,
) -> None:
    """Speed benchmarks: each a ratio against a baseline measured in the same run."""
    from sim2real.bench import run_all
    from sim2real.checks import check_count

    check_count("pretraining_seeds", pretraining_seeds, minimum=0, meaning="seeds to time pretraining over")
    console.print("Benchmarking (about 20 minutes with everything, 20 s with --no-harness --no-offpolicy "
                  "--no-training)...")
    results = run_all(harness=harness, offpolicy=offpolicy, training=training, pretraining_seeds=pretraining_seeds)
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
    console.print(table)


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
