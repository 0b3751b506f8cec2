"""The main job end to end: every transfer lever on every far target, with the shipped policies, into one folder.

`sim2real demo` calls :func:`run_demo`. Per far target it measures the nominal policy zero-shot
(the failure), the randomized policy zero-shot, the best partial-retraining strategy against
scratch with the harness, and the fitted-simulator loop where it pays; then it adapts a policy
over the testbed on a stand-in served at its control rate behind a key. Everything lands in one
folder, read first through index.md. The folder records what ran (run.json): a rerun with the
same settings resumes the harness runs, the loop and a finished testbed run (the zero-shot
evaluations and GIFs are made again); a folder of other settings or not the demo's is refused
unless `force`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sim2real import catalog, experiment
from sim2real.checks import check_count
from sim2real.defaults import EVAL_SEED
from sim2real.demo.cases import (
    FAR_TARGETS,
    TESTBED,
    ZERO_SHOT_EPISODES,
    FarTarget,
    OnTheTestbed,
    policies,
    settings,
)
from sim2real.demo.levers import (
    LeverResult,
    majority_reached,
    retraining_lever,
    testbed_lever,
    transductive_lever,
    zero_shot_lever,
)
from sim2real.demo.page import PAGE, render_page
from sim2real.demo.summary import SUMMARY_FILE, DemoSummary
from sim2real.errors import Sim2RealError
from sim2real.experiment.plan import PolicyBlob, check_policy
from sim2real.experiment.run_directory import PLAN_FILE
from sim2real.experiment.run_files import read_plan, read_report
from sim2real.factory import make_env
from sim2real.gif import record_gif
from sim2real.policy_evaluation import evaluate_policy
from sim2real.records import write_bytes_atomic, write_json_atomic
from sim2real.robot import RobotPlan, make_robot_plan, run_on_testbed
from sim2real.robot.report import read_robot_report
from sim2real.rundir import RunFolderError, RunRecord, claim_folder
from sim2real.sysid import check_budget, check_params, fittable
from sim2real.testbed.auth import generate_key_file, load_key_file
from sim2real.testbed.credentials import Credentials
from sim2real.testbed.process import ServerProcess
from sim2real.testbed.protocol import TestbedError
from sim2real.transductive import run_loop
from sim2real.transfer import SysidFinetune
from sim2real.transfer.strategies import parse_strategy
from sim2real.zoo import load_card, load_policy, policy_algorithm


def run_demo(out: Path, *, far_targets: Sequence[FarTarget] = FAR_TARGETS, testbed: OnTheTestbed | None = TESTBED,
             zero_shot_episodes: int = ZERO_SHOT_EPISODES, workers: int | None = None, gifs: bool = True,
             force: bool = False, say: Callable[[str], None] = print,
             progress: Callable[[experiment.Progress], None] | None = None) -> DemoSummary:
    """Every lever on every far target into `out`: index.md, demo.json, a folder per run; defaults: the demo's.

    Every plan is checked, and `out` claimed, before any work. The testbed run, paced by the
    stand-in's control rate, goes first in a process of its own beside the single-core stages
    (zero-shot, fitted simulator); the stand-in's server belongs to this process, so it stops with it.
    """
    started = time.perf_counter()
    check_cases(far_targets, testbed, zero_shot_episodes)
    ran = settings(far_targets, testbed, zero_shot_episodes)
    resumed = claim_folder(out, RunRecord("demo", ran), demo_outputs(far_targets), force=force)
    announce = numbered(1 + sum(2 if case.transductive else 1 for case in far_targets) + (testbed is not None), say)
    levers: list[LeverResult] = []
    runs: dict[str, str] = {}
    best: dict[str, str] = {}
    stages: dict[str, float] = {}
    with ExitStack() as background:
        robot = None
        if testbed is not None:
            announce(f"on the testbed, in the background: {testbed.strategy} from {testbed.policy} on a "
                     f"{testbed.target} stand-in served at its control rate, behind a key")
            key = testbed_key(out / "testbed.key")
            server = background.enter_context(ServerProcess("sim2real.factory:make_env", {
                "task": testbed.task, "target": testbed.target}, realtime=True, key_file=str(key)))
            robot = multiprocessing.get_context("spawn").Process(
                target=testbed_run, args=(testbed, out / "testbed", server.address, key))
            robot.start()
            background.callback(stop, robot)
        announce("zero-shot: the nominal and the randomized policy on each far target")
        with timed(stages, "zero-shot"):
            levers += [lever for case in far_targets for lever in zero_shot_levers(case, zero_shot_episodes)]
        for case in (case for case in far_targets if case.transductive):
            announce(f"fitted simulator: {case.task} → {case.target} from {case.transductive.policy}, no target reward")
            runs[f"{case.target}-sysid"] = f"{case.task}-{case.target}-sysid"
            with timed(stages, f"fitted simulator on {case.target}"):
                levers.append(transductive_run(case, out / runs[f"{case.target}-sysid"], say))
        if robot is not None:
            with timed(stages, "waiting for the testbed run"):
                robot.join()
            if robot.exitcode != 0:
                raise Sim2RealError(f"the testbed run failed (exit code {robot.exitcode}, its message is above); "
                                    f"rerun the demo to finish it, the other runs resume")
    for case in far_targets:
        retraining = case.retraining
        announce(f"partial retraining: {case.task} → {case.target}, {', '.join(retraining.strategies)} from "
                 f"{retraining.policy}, {retraining.seeds} seeds")
        runs[case.target] = f"{case.task}-{case.target}"
        with timed(stages, f"partial retraining on {case.target}"):
            retraining_run(case, out / runs[case.target], workers, progress, say)
        report = read_report(out / runs[case.target] / "report.json").to_json()
        best[case.target] = best_strategy(case, report)
        levers.append(retraining_lever(case.target, retraining.policy, best[case.target], report))
    if testbed is not None:
        runs["testbed"] = "testbed"
        units = read_robot_report(out / "testbed" / "report.json").units
        levers += [testbed_lever(testbed.target, testbed.policy, testbed.strategy, unit,
                                 catalog.load(testbed.task).threshold.value) for unit in units.values()]
    with timed(stages, "GIFs"):
        made = [path.relative_to(out) for case in far_targets if gifs
                for path in before_after_gifs(case, out / runs[case.target], best[case.target], out / "gifs")]
    summary = DemoSummary(ran, tuple(levers), runs, tuple(str(path) for path in made),
                          round(time.perf_counter() - started, 1), resumed, stages)
    write_json_atomic(out / SUMMARY_FILE, summary.to_json())
    write_bytes_atomic(out / PAGE, render_page(summary).encode())
    return summary


def demo_outputs(far_targets: Sequence[FarTarget]) -> list[str]:
    """Every name the demo writes in its folder (and the previous version's report.md, zero_shot.json)."""
    names = [PAGE, SUMMARY_FILE, "gifs", "testbed", "testbed.key", "report.md", "zero_shot.json"]
    return names + [name for case in far_targets for name in (f"{case.task}-{case.target}",
                                                              f"{case.task}-{case.target}-sysid")]


@contextmanager
def timed(stages: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall seconds the block takes as `stages[stage]` (also when it fails)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        stages[stage] = round(time.perf_counter() - started, 1)


def testbed_key(path: Path) -> Path:
    """The demo's testbed key at `path`: kept while it loads, written afresh when missing or unreadable."""
    try:
        load_key_file(path)
    except TestbedError:
        generate_key_file(path, overwrite=True)
    return path


def numbered(stages: int, say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` with each message numbered as the next of `stages` stages ("2/5 ...")."""
    counter = iter(range(1, stages + 1))
    return lambda text: say(f"{next(counter)}/{stages} {text}")


def zero_shot_levers(case: FarTarget, episodes: int) -> list[LeverResult]:
    """The nominal and the randomized policy on `case`'s target as they are: the failure and the first lever."""
    threshold = catalog.load(case.task).threshold.value
    return [zero_shot_lever(case.target, lever, policy, zero_shot_success(policy, case.task, case.target, episodes),
                            episodes, threshold)
            for lever, policy in (("nominal", case.nominal), ("randomized", case.randomized))]


def check_cases(far_targets: Sequence[FarTarget], testbed: OnTheTestbed | None, zero_shot_episodes: int) -> None:
    """Build every plan the demo will run, so that a bad setting fails before any work, naming what is accepted."""
    check_count("zero_shot_episodes", zero_shot_episodes, minimum=1, meaning="episodes per zero-shot evaluation")
    for policy in policies(far_targets, testbed):
        load_card(policy)
    for case in far_targets:
        if not trained_strategies(case):
            raise Sim2RealError(f"{case.target}: the partial retraining names no trained strategy "
                                f"({', '.join(case.retraining.strategies)}); add one, e.g. finetune")
        check_policy(retraining_plan(case))
        if case.transductive:
            strategy = parse_strategy(case.transductive.strategy)
            if not isinstance(strategy, SysidFinetune):
                raise Sim2RealError(f"{case.target}: the fitted-simulator lever takes sysid_finetune, got "
                                    f"{case.transductive.strategy!r}")
            spec = catalog.load(case.task)
            if strategy.params is not None:
                check_params(spec, strategy.params)
            check_budget(len(strategy.params or fittable(spec)), strategy.sysid_budget)
    if testbed is not None:
        robot_plan(testbed, "tcp://127.0.0.1:1")


def retraining_plan(case: FarTarget) -> experiment.Plan:
    """The harness plan of `case`'s partial retraining."""
    retraining = case.retraining
    return experiment.make_plan(case.task, retraining.policy, case.target,
                                [parse_strategy(text) for text in retraining.strategies], seeds=retraining.seeds,
                                budget=retraining.budget, eval_every=retraining.eval_every,
                                episodes=retraining.episodes)


def robot_plan(case: OnTheTestbed, address: str) -> RobotPlan:
    """The robot plan of the demo's testbed run, against the server at `address`."""
    return make_robot_plan(case.task, case.policy, address, [parse_strategy(case.strategy)],
                           algorithm=policy_algorithm(case.policy).upper(), budget=case.budget,
                           eval_every=case.eval_every, episodes=case.episodes)


def stop(process: multiprocessing.process.BaseProcess) -> None:
    """Stop a background stage still running: let a Ctrl-C it shares finish, then interrupt it, then end it."""
    process.join(timeout=5)
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGINT)
        process.join(timeout=15)
    if process.is_alive():
        process.kill()
        process.join()


def zero_shot_success(policy: str, task: str, target: str, episodes: int) -> float:
    """Success of a shipped policy's deterministic actions on `target`, over `episodes` episodes."""
    return evaluate_policy(policy, task, target=target, episodes=episodes, seed=EVAL_SEED)["success_rate"]


def retraining_run(case: FarTarget, out: Path, workers: int | None,
                   progress: Callable[[experiment.Progress], None] | None, say: Callable[[str], None]) -> Path:
    """The harness on `case`'s retraining; a rerun resumes it, a folder of other settings is started over."""
    plan = retraining_plan(case)
    if experiment.holds_another_plan(out, plan):
        say(f"{out} holds a run of other settings or policies: starting it over")
        shutil.rmtree(out)
    return experiment.run(plan, out, workers=workers, progress=progress, save_models=True)


def trained_strategies(case: FarTarget) -> list[str]:
    """The strategies of `case`'s retraining that train from the policy, as the case spells them (not scratch)."""
    parsed = {text: parse_strategy(text) for text in case.retraining.strategies}
    return [text for text, strategy in parsed.items() if strategy.trains and strategy.transfers]


def best_strategy(case: FarTarget, report: dict[str, Any]) -> str:
    """The trained strategy (as the case spells it) that most seeds took to the threshold soonest.

    A strategy most of whose seeds reached the threshold ranks first, then the sooner IQM time, then
    the higher final level.
    """

    def rank(text: str) -> tuple[bool, float, float]:
        data = report["strategies"][parse_strategy(text).name]
        return not majority_reached(data), data["time_to_threshold"]["iqm"], -data["final"][report["metric"]]["iqm"]

    return min(trained_strategies(case), key=rank)


def transductive_run(case: FarTarget, out: Path, say: Callable[[str], None]) -> LeverResult:
    """The record → fit → fine-tune loop on `case`'s target; a rerun resumes it, other settings start over."""
    assert case.transductive is not None, "only a case with a transductive lever runs the loop"
    loop = case.transductive
    arguments = {"strategy": parse_strategy(loop.strategy), "target": case.target, "eval_episodes": loop.eval_episodes}
    try:
        summary = run_loop(loop.policy, case.task, out, **arguments)
    except RunFolderError:
        say(f"{out} holds a run of other settings or policies: starting it over")
        summary = run_loop(loop.policy, case.task, out, force=True, **arguments)
    return transductive_lever(case.target, loop.policy, summary, catalog.load(case.task).threshold.value,
                              loop.eval_episodes)


def testbed_run(case: OnTheTestbed, out: Path, address: str, key: Path, say: Callable[[str], None] = print) -> Path:
    """Adapt `case.policy` over the testbed at `address` (a stand-in of `case.target` holding `key`).

    The stand-in steps at its control rate, as a robot does, so the wall time is robot time; the
    demo runs this in a process of its own beside the single-core stages (the learner needs about
    half a core at 24 Hz and 2 updates per step). A run finished with the same settings is kept;
    one cut short or of other settings is started over (a new server has a new address, so a robot
    run cannot resume across demo runs).
    """
    plan = robot_plan(case, address)
    if finished_elsewhere(out, plan.to_record(PolicyBlob.read(case.policy).sha256).to_json()):
        return out
    if out.exists():
        say(f"{out} holds an unfinished or other robot run: starting it over on the new stand-in")
        shutil.rmtree(out)
    return run_on_testbed(plan, out, credentials=Credentials.load(key_file=key))


def finished_elsewhere(out: Path, wanted: dict[str, Any]) -> bool:
    """Whether `out` holds a finished robot run of the same plan, served at another address."""
    if not (out / "report.json").exists() or not (out / PLAN_FILE).exists():
        return False
    held = read_plan(out / PLAN_FILE).to_json()
    return {**held, "testbed": None} == {**wanted, "testbed": None}


def before_after_gifs(case: FarTarget, run_dir: Path, best: str, gif_dir: Path) -> list[Path]:
    """GIFs of the retrained policy on the target before, and after `best` trained it in `run_dir` (seed 0)."""
    spec = catalog.load(case.task)
    strategy = parse_strategy(best).name
    env = make_env(spec, case.target)
    try:
        before = load_policy(case.retraining.policy, env)
    finally:
        env.close()
    after = load_policy(experiment.model_path(run_dir / experiment.MODELS_DIR, f"{case.target}/{strategy}/0"))
    return [
        record_gif(before, spec, case.target, gif_dir / f"{case.task}-{case.target}-before.gif", episodes=2),
        record_gif(after, spec, case.target, gif_dir / f"{case.task}-{case.target}-after-{strategy}.gif", episodes=2),
    ]
