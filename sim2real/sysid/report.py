"""What a fit leaves on disk: its folder claimed before it runs, fit.json, fit.md, the fitted task YAML, a figure."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim2real.episode import Policy
from sim2real.formatting import count
from sim2real.records import write_bytes_atomic, write_json_atomic
from sim2real.rundir import RunRecord, claim_folder
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid.identification import FITTED_TARGET, Fit, fitted_task
from sim2real.sysid.replay import Replay
from sim2real.sysid.trajectories import Trajectory
from sim2real.zoo import policy_sha256


def fit_outputs(spec: TaskSpec) -> tuple[str, ...]:
    """The files `write_fit` writes into its folder."""
    return ("fit.json", "fit.md", f"{spec.name}-fitted.yaml", "trajectories.png")


def claim_fit_folder(out: Path, spec: TaskSpec, rollouts: Sequence[Path], settings: Mapping[str, Any], *,
                     policy: str | None = None, force: bool = False) -> bool:
    """Make `out` this fit's folder before the fit runs: another fit there is refused unless `force` (see rundir).

    The rollout files are named by their content's hash, so a fit to other recordings is another run.
    """
    recordings = [{"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}
                  for path in rollouts]
    run = RunRecord("sysid", {"task": spec.name, "task_hash": spec.spec_hash, "rollouts": recordings,
                              "policy": policy, "policy_sha256": policy and policy_sha256(policy), **settings})
    return claim_folder(Path(out), run, fit_outputs(spec), force=force)


def write_fit(fit: Fit, spec: TaskSpec, trajectories: Sequence[Trajectory], out: str | Path,
              policy: Policy | None = None) -> dict[str, Path]:
    """Write fit.json, fit.md, the fitted task YAML and a figure of recorded vs simulated observations.

    `policy` is the one a closed-loop fit replayed with: the figure replays the same way.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fit": out / "fit.json", "report": out / "fit.md", "task": out / f"{spec.name}-fitted.yaml",
             "figure": out / "trajectories.png"}
    write_json_atomic(paths["fit"], fit.to_dict())
    write_bytes_atomic(paths["task"], yaml.safe_dump(fitted_task(spec, fit), sort_keys=False,
                                                     allow_unicode=True).encode())
    write_bytes_atomic(paths["report"], _markdown(fit, paths).encode())
    write_bytes_atomic(paths["figure"], _figure(fit, spec, trajectories[0], policy))
    return paths


def _markdown(fit: Fit, paths: Mapping[str, Path]) -> str:
    lines = [
        f"# System identification: {fit.task}",
        "",
        f"{count(fit.episodes, 'recorded episode')}, the first {fit.horizon} steps of each replayed {fit.replay}; "
        f"{fit.evaluations} discrepancy evaluations (CMA-ES)"
        + ("." if fit.base == SOURCE else f"; the other parameters as in target `{fit.base}`."),
        "",
        f"Action latency: {fit.action_delay_steps} control steps. Discrepancy (mean squared observation "
        f"difference): {fit.discrepancy_before:.5f} at the start ({_start(fit)} values), "
        f"{fit.discrepancy_after:.5f} fitted.",
        "",
        "The search spread is how wide CMA-ES's last search distribution still was along a parameter: "
        "how flat the discrepancy is there, not a confidence interval. Parameters the recordings cannot "
        "tell apart (e.g. mass and motor force, which act through their ratio) get a small spread and "
        "can still be far off; episodes recorded with a known change that breaks the tie (a payload of "
        "known mass: `sim2real record --known`) separate them.",
        "",
        "| parameter | estimate | search spread | nominal | bounds | recommended randomization |",
        "|---|---:|---:|---:|---|---|",
    ]
    ranges = fit.randomization()
    for name, entry in fit.params.items():
        low, high = ranges[name]["uniform"]
        lines.append(f"| {name} | {entry['estimate']:.4g} | {entry['spread']:.2g} | {entry['nominal']:.4g} | "
                     f"[{entry['low']:g}, {entry['high']:g}] | uniform [{low:g}, {high:g}] |")
    lines += ["", f"The fitted target: `{paths['task'].name}`, target `{FITTED_TARGET}` "
              f"(e.g. `sim2real train {paths['task'].name} --target {FITTED_TARGET} --randomize`).",
              "", f"![recorded vs simulated]({paths['figure'].name})", ""]
    return "\n".join(lines)


def _start(fit: Fit) -> str:
    """Where the fit started from: the nominal values, or its base target's."""
    return "nominal" if fit.base == SOURCE else f"target {fit.base!r}"


def _figure(fit: Fit, spec: TaskSpec, trajectory: Trajectory, policy: Policy | None = None, dims: int = 4) -> bytes:
    """Recorded observations of one episode against the simulation before (nominal or base values) and fitted."""
    from matplotlib.figure import Figure

    replay = Replay(spec, [trajectory], fit.horizon, policy, fit.base)
    try:
        labels = getattr(replay.env.unwrapped, "observation_labels", ())
        before = replay.simulate({}, trajectory, fit.action_delay_steps)
        fitted = replay.simulate(fit.values, trajectory, fit.action_delay_steps)
    finally:
        replay.close()
    recorded = trajectory.observations[: fit.horizon + 1]
    spread = recorded.std(axis=0)
    shown = sorted(np.argsort(spread)[::-1][:dims])
    figure = Figure(figsize=(10, 2.2 * len(shown)), layout="constrained")
    axes = figure.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for axis, dim in zip(axes, shown, strict=True):
        axis.plot(recorded[:, dim], color="black", label="recorded")
        axis.plot(before[:, dim], color="tab:gray", linestyle="--", label=f"simulated, {_start(fit)}")
        axis.plot(fitted[:, dim], color="tab:blue", label="simulated, fitted")
        axis.set_ylabel(labels[dim] if dim < len(labels) else f"obs[{dim}]", fontsize="small")
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("control step")
    figure.suptitle(f"{spec.name}: episode seed {trajectory.seed}, recorded vs simulated")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
