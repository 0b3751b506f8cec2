"""The main job end to end on the shipped policies: zero-shot table, transfer experiments, testbed, figures, GIFs.

`sim2real demo` calls :func:`run_demo`; everything lands in one directory with a report.md that
links the rest. Budgets are chosen to finish in about ten minutes on two cores.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim2real import catalog, experiment
from sim2real.defaults import EVAL_SEED
from sim2real.experiment.run_files import read_report
from sim2real.experiment.summary import GAIN_COLUMNS, gain_cells, negative_transfer_word
from sim2real.factory import make_env
from sim2real.formatting import percent
from sim2real.gif import record_gif
from sim2real.records import write_bytes_atomic, write_json_atomic
from sim2real.rollout import evaluate
from sim2real.spec import SOURCE
from sim2real.testbed.process import ServerProcess
from sim2real.testbed.remote_policy import evaluate_on_testbed, format_latency
from sim2real.zoo import check_spaces, list_zoo, load_card, load_policy, space_changes

STRATEGIES = ("zero_shot", "finetune", "freeze_base", "reinit_head", "scratch")


@dataclass(frozen=True)
class TransferCase:
    """One transfer experiment of the demo: a far target of a task, from a shipped policy."""

    task: str
    target: str
    policy: str
    budget: int
    eval_every: int
    episodes: int = 10
    seeds: int = 3


CASES = (
    TransferCase("driving", "truck", "driving-ppo-nominal", budget=24_000, eval_every=6_000),
    TransferCase("grasping", "warehouse", "grasping-ppo-nominal", budget=18_000, eval_every=6_000),
)


def zero_shot_table(episodes: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every shipped policy on every target of its task it can run on: success and mean return, measured now."""
    rows = []
    for name in list_zoo():
        spec = catalog.load(load_card(name)["task"])
        model = load_policy(name)
        for target in (SOURCE, *spec.targets):
            env = make_env(spec, target)
            if target != SOURCE and space_changes(model, env):
                env.close()
                continue
            check_spaces(model, env, name)
            summary = evaluate(model, env, episodes, seed=EVAL_SEED)
            env.close()
            kind = "source" if target == SOURCE else spec.targets[target].kind
            rows.append({"policy": name, "task": spec.name, "target": target, "kind": kind,
                         "success": summary["success_rate"], "return": summary["mean_return"]})
        say(f"zero-shot: {name} done")
    return rows


def transfer_case(case: TransferCase, out: Path, workers: int | None,
                  progress: Callable[[experiment.Progress], None] | None,
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one transfer experiment with the harness; returns its report.json content and paths.

    A rerun resumes the case; a folder left by other settings or other shipped policies (an
    older checkout) is the demo's own output and is started over.
    """
    plan = experiment.make_plan(case.task, case.policy, case.target, STRATEGIES, seeds=case.seeds, budget=case.budget,
                                eval_every=case.eval_every, episodes=case.episodes)
    if experiment.holds_another_plan(out, plan):
        say(f"{out} holds a run of other settings or policies: starting it over")
        shutil.rmtree(out)
    run_dir = experiment.run(plan, out, workers=workers, progress=progress, save_models=True)
    return {**read_report(run_dir / "report.json").to_json(), "run_dir": str(run_dir)}


def best_strategy(report: dict[str, Any]) -> str:
    """The trained strategy with the best final level (IQM, in the threshold's metric), scratch excluded."""
    candidates = {name: data for name, data in report["strategies"].items() if name not in ("scratch", "zero_shot")}
    return max(candidates, key=lambda name: candidates[name]["final"][report["metric"]]["iqm"])


def before_after_gifs(case: TransferCase, strategy: str, run_dir: Path, out: Path) -> list[Path]:
    """GIFs of the pretrained policy on the target, and of the seed-0 model the harness trained with `strategy`."""
    spec = catalog.load(case.task)
    before = load_policy(case.policy, make_env(spec, case.target))
    after = load_policy(experiment.model_path(run_dir / experiment.MODELS_DIR, f"{case.target}/{strategy}/0"))
    return [
        record_gif(before, spec, case.target, out / f"{case.task}-{case.target}-before.gif", episodes=2),
        record_gif(after, spec, case.target, out / f"{case.task}-{case.target}-after-{strategy}.gif", episodes=2),
    ]


def testbed_run(out: Path, episodes: int = 20) -> dict[str, Any]:
    """The randomized driving policy on a local stand-in server of the `real` target, over the protocol."""
    with ServerProcess("sim2real.factory:make_env", {"task": "driving", "target": "real"}) as server:
        return evaluate_on_testbed("driving-ppo-dr", catalog.load("driving"), server.address, episodes=episodes,
                                   out=out)


def run_demo(out: Path, *, episodes: int = 50, workers: int | None = None, gifs: bool = True,
             say: Callable[[str], None] = print,
             progress: Callable[[experiment.Progress], None] | None = None) -> dict[str, Any]:
    """The whole story into `out`: report.md, zero_shot.json, one transfer run per far target, testbed, GIFs."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say("1/4 zero-shot: every shipped policy on every target")
    table = zero_shot_table(episodes, say)
    write_json_atomic(out / "zero_shot.json", table)
    reports = {}
    for index, case in enumerate(CASES, start=2):
        say(f"{index}/4 transfer: {case.task} → {case.target} from {case.policy}")
        reports[case.task] = transfer_case(case, out / f"{case.task}-{case.target}", workers, progress, say)
    say("4/4 testbed: driving-ppo-dr on a stand-in of the real car, over TCP")
    testbed = testbed_run(out / "testbed")
    made_gifs: list[Path] = []
    if gifs:
        for case in CASES:
            run_dir = Path(reports[case.task]["run_dir"])
            made_gifs += before_after_gifs(case, best_strategy(reports[case.task]), run_dir, out / "gifs")
    summary = {"zero_shot": table, "transfer": reports, "testbed": testbed,
               "gifs": [str(p.relative_to(out)) for p in made_gifs],
               "wall_seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(out / "demo.json", summary)
    write_bytes_atomic(out / "report.md", render_report(summary).encode())
    return summary


def render_report(summary: dict[str, Any]) -> str:
    """The demo's report.md: tables and links to each transfer run's own report and figures."""
    lines = ["# sim2real demo", "", f"Finished in {summary['wall_seconds']:.0f} s.", "",
             "## Zero-shot: every shipped policy on every target", "",
             "| policy | target | kind | success | mean return |", "|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {r['target']} | {r['kind']} | {percent(r['success'])} | {r['return']:.2f} |"
              for r in summary["zero_shot"]]
    for case in CASES:
        report = summary["transfer"][case.task]
        run = f"{case.task}-{case.target}"
        lines += ["", f"## Transfer: {case.task} → {case.target} (from {case.policy})", "",
                  f"**When to transfer:** {report['settings'].get('recommendation', '')}", "",
                  f"| {' | '.join(GAIN_COLUMNS)} | negative transfer |", "|---|---|---|---|---|"]
        for name, data in report["strategies"].items():
            verdict = data.get("negative_transfer")
            lines.append(f"| {' | '.join(gain_cells(name, data))} | "
                         f"{'**YES**' if verdict else negative_transfer_word(verdict)} |")
        lines += ["", f"![curves]({run}/curves.png) ![gain]({run}/gain.png)", "",
                  f"Full report: [{run}/report.md]({run}/report.md)"]
    testbed = summary["testbed"]
    lines += ["", "## Testbed: driving-ppo-dr on the real stand-in, over TCP", "",
              f"{testbed['episodes']} episodes, success {percent(testbed['success_rate'])}, mean return "
              f"{testbed['mean_return']:.2f}, round trip p50 / p99 {format_latency(testbed['latency_ms'])}. "
              f"Episodes: testbed/episodes.jsonl.", ""]
    if summary["gifs"]:
        lines += ["## Before and after transfer", ""] + [f"![{gif}]({gif})" for gif in summary["gifs"]] + [""]
    return "\n".join(lines)

