"""Identification: fit a task's domain parameters with CMA-ES so that replays reproduce the recordings.

:func:`prepare` checks a request into a :class:`Problem`, :func:`solve` searches it, :func:`identify`
does both; :func:`fitted_task` turns the :class:`Fit` into a task YAML with a target holding it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2real import catalog
from sim2real.checks import check_count, check_seed
from sim2real.domain import DomainParam
from sim2real.episode import Policy
from sim2real.errors import allowed
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid.params import SysIdError, check_params
from sim2real.sysid.replay import DEFAULT_HORIZON
from sim2real.sysid.scoring import Scorer
from sim2real.sysid.trajectories import Trajectory, load_trajectories

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Scale:
    """Maps a float parameter to [0, 1] for CMA-ES: log-scale when its bounds span a factor of 4 or more."""

    param: DomainParam

    @property
    def log(self) -> bool:
        low, high = self.param.low, self.param.high
        return low is not None and low > 0 and high / low >= 4

    def to_unit(self, value: float) -> float:
        low, high = float(self.param.low), float(self.param.high)
        if self.log:
            return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return (value - low) / (high - low)

    def from_unit(self, unit: float) -> float:
        low, high = float(self.param.low), float(self.param.high)
        unit = min(max(unit, 0.0), 1.0)
        if self.log:
            return math.exp(math.log(low) + unit * (math.log(high) - math.log(low)))
        return low + unit * (high - low)


@dataclass
class Fit:
    """The identified parameters, each with its search spread, and how well the simulation matches before and after."""

    task: str
    params: dict[str, dict[str, float]]
    action_delay_steps: int
    discrepancy_before: float
    discrepancy_after: float
    evaluations: int
    episodes: int
    horizon: int
    replay: str = "open-loop"
    base: str = SOURCE

    @property
    def values(self) -> dict[str, float]:
        """The estimates alone, as domain values."""
        return {name: entry["estimate"] for name, entry in self.params.items()}

    def randomization(self, width: float = 2.0) -> dict[str, dict[str, list[float]]]:
        """Uniform randomization ranges around the fit: estimate ± `width` spreads (at least ±10 %), in bounds."""
        ranges = {}
        for name, entry in self.params.items():
            half = max(width * entry["spread"], 0.1 * abs(entry["estimate"]))
            ranges[name] = {"uniform": [round(max(entry["low"], entry["estimate"] - half), 4),
                                        round(min(entry["high"], entry["estimate"] + half), 4)]}
        return ranges

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what fit.json holds."""
        return {
            "task": self.task,
            "params": self.params,
            "action_delay_steps": self.action_delay_steps,
            "discrepancy_before": self.discrepancy_before,
            "discrepancy_after": self.discrepancy_after,
            "evaluations": self.evaluations,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "replay": self.replay,
            "base": self.base,
            "randomization": self.randomization(),
        }


def read_fit(path: str | Path) -> Fit:
    """The fit that :func:`sim2real.sysid.report.write_fit` wrote to `path` (fit.json)."""
    path = Path(path)
    if not path.is_file():
        raise SysIdError(f"fit file {path} does not exist")
    data = json.loads(path.read_text())
    return Fit(**{name: data[name] for name in Fit.__dataclass_fields__ if name in data})


def check_not_known(params: Sequence[str], trajectories: Sequence[Trajectory]) -> None:
    """Refuse to fit a parameter whose value every recorded episode gives as known: nothing is left to fit."""
    pinned = [name for name in params if all(name in t.known for t in trajectories)]
    if pinned:
        raise SysIdError(f"cannot fit {allowed(pinned)}: every recorded episode gives its value as known")


def population(params: int) -> int:
    """Candidates per CMA-ES generation when fitting `params` parameters: twice CMA-ES's default (see `identify`)."""
    return 2 * (4 + int(3 * math.log(params)))


def minimum_budget(params: int, delay: int | None, max_delay: int = 3) -> int:
    """The fewest discrepancy evaluations a fit makes: one CMA-ES generation (at every latency if it is fitted)."""
    if delay is not None:
        return population(params)
    return (population(params) + 1) * (max_delay + 1)


def check_budget(params: int, budget: Any, delay: int | None = None, max_delay: int = 3) -> None:
    """Refuse a budget below one generation of the search, which would be overspent without a word."""
    least = minimum_budget(params, delay, max_delay)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < least:
        latencies = "at the fixed latency" if delay is not None else f"at each of {max_delay + 1} latencies, +1 each"
        raise SysIdError(f"budget (discrepancy evaluations) {budget!r} is below one CMA-ES generation: fitting "
                         f"{params} parameter{'s' if params != 1 else ''} takes at least {least} "
                         f"({population(params)} candidates {latencies}); give a budget >= {least}")


def check_latency(delay: int | None) -> None:
    """Refuse a fixed action latency that is not a whole number of control steps >= 0 (None: fit it)."""
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or delay < 0):
        raise SysIdError(f"the action latency must be an integer >= 0 control steps, got {delay!r}")


def check_recorded_by(policy: Policy, trajectories: Sequence[Trajectory], steps: int = 5) -> None:
    """Refuse a closed-loop replay whose policy is not the one that recorded the episodes, deterministically.

    The first `steps` recorded actions of each episode must be what `policy` does on the recorded
    observations; otherwise the replay would compare two different drivers, not two physics.
    """
    for number, trajectory in enumerate(trajectories, start=1):
        for step in range(min(steps, len(trajectory.actions))):
            acted = np.asarray(policy.predict(trajectory.observations[step].astype(np.float32), deterministic=True)[0],
                               dtype=float).reshape(-1)
            recorded = trajectory.actions[step].reshape(-1)
            if acted.shape != recorded.shape or not np.allclose(acted, recorded, atol=1e-4):
                raise SysIdError(
                    f"episode {number} (seed {trajectory.seed}), step {step}: the recorded action "
                    f"{np.round(recorded, 4).tolist()} is not what the policy does on the recorded observation "
                    f"({np.round(acted, 4).tolist()}); a closed-loop replay needs the policy that recorded the "
                    "episodes, acting deterministically (as `sim2real record` does)")


@dataclass(frozen=True, eq=False)
class Problem:
    """An identification request, checked: what to fit, to which episodes, replayed how, searched how long."""

    spec: TaskSpec
    params: tuple[DomainParam, ...]
    trajectories: tuple[Trajectory, ...]
    budget: int
    seed: int
    horizon: int
    max_delay: int
    policy: Policy | None
    base: str
    delay: int | None

    @property
    def replay(self) -> str:
        """How the episodes are replayed: open-loop (the recorded actions) or closed-loop (the policy acting)."""
        return "open-loop" if self.policy is None else "closed-loop"


def prepare(
    task: str | Path | TaskSpec,
    trajectories: Sequence[Trajectory] | str | Path,
    params: Sequence[str],
    budget: int = 300,
    seed: int = 0,
    horizon: int = DEFAULT_HORIZON,
    max_delay: int = 3,
    policy: Policy | None = None,
    base: str = SOURCE,
    delay: int | None = None,
) -> Problem:
    """Check every input of an identification (task, parameters, episodes loaded, budget, latency) before any search.

    The arguments are :func:`identify`'s; a rollout file given as `trajectories` is read here.
    """
    spec = catalog.load(task)
    chosen = check_params(spec, params)
    check_latency(delay)
    check_budget(len(chosen), budget, delay, max_delay)
    check_count("horizon", horizon, meaning="control steps compared per episode")
    check_seed(seed)
    spec.target(base)
    if isinstance(trajectories, str | Path):
        trajectories = load_trajectories(trajectories, spec)
    check_not_known(params, trajectories)
    if policy is not None:
        check_recorded_by(policy, trajectories)
    return Problem(spec, tuple(chosen), tuple(trajectories), budget, seed, horizon, max_delay, policy, base, delay)


def identify(*args: Any, workers: int = 1, **kwargs: Any) -> Fit:
    """Fit `params` so that replaying the recorded episodes reproduces the recorded observations.

    ``identify(task, trajectories, params, budget=300, seed=0, horizon=DEFAULT_HORIZON, max_delay=3,
    policy=None, base="source", delay=None)``: the arguments of :func:`prepare`, which checks them;
    :func:`solve` then searches, scoring each generation's open-loop replays over `workers`
    processes (the same fit for any number).

    The replay is open-loop (the recorded actions), or closed-loop with `policy`, the policy that
    recorded the episodes (see :class:`Replay`). Open-loop replays measure the response to the
    actions before unrecorded actuator noise adds up (inertia, motor force, latency): keep them
    short. Closed-loop replays can run longer, as the policy corrects the simulated car as it did
    the real one, and show what only long stretches show (where the tyres start to slide), but the
    real policy acted on noisy sensors and the simulated one does not, which biases what the noise
    changes (how hard it pushed). So identify in two steps where it matters: open-loop first, then
    closed-loop for the rest with the first fit as `base` and its latency as `delay`.
    Parameters not fitted take the `base` target's values. The action latency is `delay` control
    steps if given (then the whole `budget` goes to one CMA-ES search), else fitted in
    0..max_delay together with the parameters: half
    the `budget` goes to a CMA-ES search (parameters in [0, 1] each, log-scaled for wide
    multiplicative ranges) whose every candidate is replayed at every latency and scored by the
    best of them; the latency of the best candidate is kept, and the rest of the budget refines
    the parameters at that latency. (Choosing the latency at the nominal values instead picks the
    wrong one whenever the nominal simulation is far off.) A budget unit is one replay of the
    episodes at one latency.
    The estimate is the mean of CMA-ES's final search distribution, not its best single candidate:
    replaying a contact-rich simulation is chaotic (a change of 1e-6 in a mass moves the
    discrepancy by several per cent), so the lowest score seen is partly luck, while the mean
    averages over the candidates the search kept; and the population is twice CMA-ES's default,
    which keeps the search from settling in one of the discrepancy's dips (the rationale of
    IPOP-CMA-ES, Auger and Hansen 2005). Each parameter's `spread` is how wide that
    distribution still is along it, in the parameter's units: a measure of how flat the
    discrepancy is around the estimate, not a confidence interval.
    """
    return solve(prepare(*args, **kwargs), workers=workers)


def solve(problem: Problem, workers: int = 1) -> Fit:
    """Search the parameters of a prepared problem with CMA-ES (see :func:`identify` for how and why)."""
    import cma  # ~2 s to import: only identification pays it, not every user of the strategies

    spec, chosen, trajectories, horizon = problem.spec, problem.params, problem.trajectories, problem.horizon
    budget, seed, max_delay, delay = problem.budget, problem.seed, problem.max_delay, problem.delay
    policy, base = problem.policy, problem.base
    scales = [_Scale(p) for p in chosen]
    scorer = Scorer(spec, trajectories, horizon, policy, base, workers)
    replay = scorer.replay
    try:
        nominal = {p.name: float(p.nominal) for p in chosen}

        def values_of(x: Sequence[float]) -> dict[str, float]:
            return {s.param.name: s.from_unit(float(u)) for s, u in zip(scales, x, strict=True)}

        def search(x0: Sequence[float], sigma: float, candidates: int,
                   delays: Sequence[int]) -> cma.CMAEvolutionStrategy:
            options = {"bounds": [0.0, 1.0], "maxfevals": candidates, "seed": seed + 1, "verbose": -9,
                       "popsize": population(len(scales))}
            if len(x0) == 1:
                options["maxstd"] = math.inf  # cma 4.5 cannot cap a 1-D search's step size (it raises instead)
            strategy = cma.CMAEvolutionStrategy(list(x0), sigma, options)
            while not strategy.stop():
                asked = strategy.ask()
                strategy.tell(asked, scorer.scores([values_of(x) for x in asked], delays))
                log.info("CMA-ES generation %d: best discrepancy so far %.5f (%d candidates)",
                         strategy.countiter, strategy.result.fbest, strategy.result.evaluations)
            return strategy

        x0 = [s.to_unit(nominal[s.param.name]) for s in scales]
        if delay is not None:  # no latency to choose: one uninterrupted search keeps what CMA-ES learnt
            fixed = search(x0, 0.25, budget, [delay])
            latency, evaluations = delay, fixed.result.evaluations
            best, stds = fixed.result.xfavorite, fixed.result.stds
        else:
            delays = range(max_delay + 1)
            joint = search(x0, 0.25, max(6, budget // (2 * len(delays))), delays)
            best, stds = joint.result.xfavorite, joint.result.stds
            latency = min(delays, key=lambda d: replay.discrepancy(values_of(best), d))
            evaluations = (joint.result.evaluations + 1) * len(delays)
            if budget - evaluations >= 10:
                refine = search(best, 0.1, budget - evaluations, [latency])
                evaluations += refine.result.evaluations
                best, stds = refine.result.xfavorite, refine.result.stds
        before = replay.discrepancy({name: replay.base[name] for name in nominal}, latency)
        after = replay.discrepancy(values_of(best), latency)
        fitted: dict[str, dict[str, float]] = {}
        for scale, unit, spread in zip(scales, best, stds, strict=True):
            estimate = scale.from_unit(float(unit))
            low, high = scale.from_unit(float(unit) - float(spread)), scale.from_unit(float(unit) + float(spread))
            fitted[scale.param.name] = {
                "estimate": round(estimate, 5), "spread": round((high - low) / 2, 5),
                "nominal": float(scale.param.nominal), "low": float(scale.param.low), "high": float(scale.param.high),
            }
        return Fit(spec.name, fitted, latency, before, after, evaluations, len(replay.trajectories), horizon,
                   problem.replay, base)
    finally:
        scorer.close()


def refine_closed_loop(task: str | Path | TaskSpec, first: Fit, trajectories: Sequence[Trajectory],
                       params: Sequence[str], policy: Policy, **options: Any) -> Fit:
    """The second step of a two-step identification: refit `params` closed-loop on top of `first`.

    The other parameters and the latency stay as `first` (an open-loop fit) found them; `options`
    (budget, horizon, seed) go to :func:`identify`. The same as ``sim2real sysid FIRST-FITTED.yaml
    --policy P --base fitted --latency N``.
    """
    spec = catalog.load(task)
    on_first = catalog.parse(fitted_task(spec, first), source=f"{spec.name} after a first fit")
    return identify(on_first, trajectories, params, policy=policy, base=FITTED_TARGET,
                    delay=first.action_delay_steps, **options)


def fit_subsets(task: str | Path | TaskSpec, trajectories: Sequence[Trajectory], params: Sequence[str],
                sizes: Sequence[int], refine: Mapping[str, Any] | None = None,
                **options: Any) -> dict[int, list[dict[str, float]]]:
    """Per size, the estimates fitted to each disjoint run of that many recorded episodes.

    How far the estimates from equally many episodes scatter, and how that changes with more, is
    the evidence of how many recordings an identification needs. `options` go to :func:`identify`;
    with `refine` (the arguments of :func:`refine_closed_loop` after the trajectories), each fit
    is followed by that second step, and the estimates are both steps' together.
    """
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(trajectories):
            raise SysIdError(f"subset size must be an integer from 1 to {len(trajectories)} (the episodes "
                             f"recorded), got {size!r}")

    def estimates(subset: Sequence[Trajectory]) -> dict[str, float]:
        first = identify(task, subset, params, **options)
        if refine is None:
            return first.values
        return {**first.values, **refine_closed_loop(task, first, subset, **refine).values}

    return {size: [estimates(trajectories[start:start + size])
                   for start in range(0, len(trajectories) - size + 1, size)]
            for size in sizes}


FITTED_TARGET = "fitted"


def fitted_task(spec: TaskSpec, fit: Fit, name: str = FITTED_TARGET) -> dict[str, Any]:
    """The task YAML with a target `name` holding the fit, and randomization ranges centred on it.

    The fitted target keeps the estimated latency as its reality gap, and the fit's base target's
    values for the parameters it did not fit; the randomization of every fitted parameter is
    replaced by the recommended range, so ``--randomize`` trains around the fit.
    """
    raw = copy.deepcopy(dict(spec.raw))
    gap = {"action_delay_steps": fit.action_delay_steps} if fit.action_delay_steps else {}
    target: dict[str, Any] = {
        "kind": "real",
        "description": f"identified from {fit.episodes} recorded episodes (sim2real sysid)",
        "params": {**spec.target(fit.base).params, **{key: float(value) for key, value in fit.values.items()}},
    }
    if gap:
        target["reality_gap"] = gap
    raw.setdefault("targets", {})[name] = target
    raw["randomization"] = {**(raw.get("randomization") or {}), **fit.randomization()}
    return raw
