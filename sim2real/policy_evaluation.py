"""`sim2real evaluate`'s work: a policy scored on a task's target, in simulation or on a robot testbed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim2real import catalog
from sim2real.checks import check_count, check_seed
from sim2real.factory import make_env
from sim2real.gif import record_gif
from sim2real.rollout import EVALUATION_OUTPUTS, Episode, evaluate
from sim2real.rundir import claim_folder
from sim2real.spec import SOURCE, TaskSpec
from sim2real.target_env import check_target_or_testbed, target_run
from sim2real.testbed.remote_policy import evaluate_on_testbed
from sim2real.zoo import load_policy

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials


def evaluate_policy(
    policy: str | Path,
    task: str | Path | TaskSpec,
    *,
    target: str = SOURCE,
    episodes: int = 100,
    seed: int = 0,
    testbed: str | None = None,
    gif: Path | None = None,
    out: Path | None = None,
    deterministic: bool = True,
    credentials: Credentials | None = None,
    force: bool = False,
    on_episode: Callable[[Episode], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a zoo name / bundle / zip on a target and return the summary (also written to `out`).

    A rerun into the same `out` resumes only the same evaluation (policy, task, target or testbed,
    seed, deterministic); another is refused unless `force`, which replaces it. On a testbed,
    `credentials` carry the key and TLS check the server asks for.
    """
    spec = catalog.load(task)
    spec.target(target)
    check_seed(seed)
    check_count("episodes", episodes)
    check_target_or_testbed(target, testbed, "evaluation")
    run = target_run("evaluate", policy, spec, target, testbed, seed, deterministic=deterministic)
    if testbed is not None:
        if out is not None:
            claim_folder(Path(out), run, EVALUATION_OUTPUTS, force=force)
        return evaluate_on_testbed(policy, spec, testbed, episodes=episodes, seed=seed, out=out,
                                   deterministic=deterministic, credentials=credentials, on_episode=on_episode)
    env = make_env(spec, target)
    try:
        model = load_policy(policy, env)  # a policy that does not fit is refused before the folder is claimed
        if out is not None:
            claim_folder(Path(out), run, EVALUATION_OUTPUTS, force=force)
        summary = evaluate(model, env, episodes, seed=seed, out=out, deterministic=deterministic, on_episode=on_episode,
                           extra_summary=lambda: {"policy": str(policy), "task": spec.name, "target": target})
    finally:
        env.close()
    if gif is not None:
        record_gif(model, spec, target, gif, seed=seed, deterministic=deterministic)
    return summary
