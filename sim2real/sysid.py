"""System identification: fit a task's domain parameters to recorded target episodes, no reward needed.

Recorded episodes (observations and the actions the policy sent, per step) are replayed in
simulation: each episode from ``reset(seed)`` with the recorded seed, and either the recorded
actions applied in order (open-loop) or the policy that recorded them acting on the simulated
observations (closed-loop), actions optionally a few control steps late, as a latency would; the
simulated observations are compared with the recorded ones. CMA-ES (the ``cma`` package)
minimises the mean squared observation difference over the chosen parameters. CMA-ES because the
discrepancy of a contact-rich simulation is noisy and non-smooth in its parameters, there are only a handful of
them, and it is the optimiser of SimOpt (Chebotar et al. 2019); the ``cma`` package is small,
pure Python and needs no storage backend.

Rollout files are JSONL, one episode per line: ``{"seed": int, "observations": [[...], ...],
"actions": [[...], ...]}`` with one more observation than actions (the reset observation first),
and optionally ``"known": {"param": value, ...}``: domain values the experimenter set while
recording that episode (a known payload, say), which its replay applies over the candidate values.
:func:`record` writes them, locally or through the testbed client.

Some parameters act on the observations only together: on the car every force but the motor's
scales with its mass, so plain driving shows the ratio of motor force to mass, never the two.
Episodes recorded with a known change that breaks such a tie (a payload of known mass) make them
identifiable, as a weighed payload does on a real robot.

Open-loop replays drift from the recording as the target's unrecorded actuator noise adds up, and
a drifting replay favours a car that steers less: keep them short. What only long stretches show
(where the tyres start to slide) needs closed-loop replays, in which the policy corrects the
simulated car as it did the real one. Hence the two-step identification (:func:`refine_closed_loop`).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import yaml

from sim2real import catalog, defaults
from sim2real.catalog import SOURCE, TaskSpec
from sim2real.checks import check_count, check_seed
from sim2real.domain import DomainParam
from sim2real.errors import Sim2RealError, allowed
from sim2real.evaluation.rollout import Policy
from sim2real.factory import make_env
from sim2real.formatting import count
from sim2real.records import JsonlWriter, read_jsonl, write_bytes_atomic, write_json_atomic
from sim2real.rundir import HEADER_KEY, RunRecord, claim_file, claim_folder
from sim2real.wrappers import ActionDelay, DomainWrapper
from sim2real.zoo import load_policy, policy_sha256

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials

log = logging.getLogger(__name__)

DEFAULT_HORIZON = defaults.SYSID_HORIZON


ACTION_TOLERANCE = 1e-6
"""How far past the action bounds a recorded action may lie (float rounding) before a rollout is refused."""


class SysIdError(Sim2RealError):
    """Rollouts or a fit request that cannot be used: names the file, the value and what is accepted."""


@dataclass(frozen=True)
class Trajectory:
    """One recorded episode: its reset seed, observations (T+1 × obs), the actions sent (T × act), known values.

    `known` holds the domain values the experimenter set for this episode (e.g. a payload's mass);
    its replay uses them, whatever the candidate values of a fit.
    """

    seed: int
    observations: np.ndarray
    actions: np.ndarray
    known: Mapping[str, float] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON line of a rollout file."""
        record = {"seed": self.seed, "observations": self.observations.tolist(), "actions": self.actions.tolist()}
        if self.known:
            record["known"] = dict(self.known)
        return record


def recorded_steps(trajectories: Sequence[Trajectory]) -> int:
    """Control steps in the recorded episodes: what recording them cost on the target."""
    return sum(len(t.actions) for t in trajectories)


def record_episode(policy: Policy, env: gym.Env, seed: int, deterministic: bool = True,
                   known: Mapping[str, float] | None = None) -> Trajectory:
    """Run one episode from ``reset(seed)`` and keep what a target without reward gives: observations, actions.

    `known` is written with the episode: the domain values set on the target while it ran.
    """
    obs, _ = env.reset(seed=seed)
    observations, actions, done = [np.asarray(obs, dtype=float)], [], False
    while not done:
        action, _ = policy.predict(obs, deterministic=deterministic)
        obs, _, terminated, truncated, _ = env.step(action)
        observations.append(np.asarray(obs, dtype=float))
        actions.append(np.asarray(action, dtype=float))
        done = terminated or truncated
    return Trajectory(seed, np.array(observations), np.array(actions), dict(known or {}))


def record(policy: Policy, env: gym.Env, episodes: int, path: str | Path, seed: int = 0,
           deterministic: bool = True, known: Mapping[str, float] | None = None) -> list[Trajectory]:
    """Run `episodes` episodes (seeds seed+i) and append each to the rollout file at `path` as it ends.

    `known` (the domain values set on the target for these episodes) is written with each episode.
    """
    trajectories = []
    with JsonlWriter(Path(path)) as writer:
        for index in range(episodes):
            trajectory = record_episode(policy, env, seed + index, deterministic, known)
            writer.write(trajectory.to_record())
            writer.fsync()
            trajectories.append(trajectory)
    return trajectories


def record_policy(policy: str | Path, task: str | Path | TaskSpec, path: str | Path, *, target: str = SOURCE,
                  episodes: int = 20, seed: int = 0, testbed: str | None = None,
                  known: Mapping[str, Any] | None = None, credentials: Credentials | None = None,
                  force: bool = False) -> list[Trajectory]:
    """Record a zoo name / bundle / zip on a target of the task, or on the testbed at `testbed` (shielded).

    The file's first line records the run; a rerun of the same recording into it records only
    the missing episodes, another is refused unless `force`, which replaces the file.

    `known` are domain values changed on purpose for these episodes (e.g. ``{"cargo_mass": 2.0}``,
    a payload of known mass). On a local target they are applied over the target's values; on the
    testbed the experimenter makes the change on the robot, and sim2real only writes it down. Either
    way each episode carries them, so identification replays it with them. `credentials`: the
    testbed's key and TLS check.
    """
    path = Path(path)
    check_count("episodes", episodes)
    check_seed(seed)
    spec = catalog.load(task)
    spec.target(target)
    known = check_known(spec, known or {}, where="known values")
    if testbed is not None and target != SOURCE:
        raise SysIdError(f"target {target!r} given with a testbed: the testbed is the target, so --target "
                         f"applies to local recording only")
    run = RunRecord("record", {"policy": str(policy), "policy_sha256": policy_sha256(policy), "task": spec.name,
                               "task_hash": spec.spec_hash, "target": "testbed" if testbed else target,
                               "seed": seed, "known": known})
    have = load_trajectories(path, spec) if claim_file(path, run, force=force) and _holds_episodes(path) else []
    if len(have) >= episodes:
        return have[:episodes]
    if testbed is not None:
        from sim2real.testbed.evaluation import connect

        model = load_policy(policy)
        env: gym.Env = connect(testbed, model, credentials=credentials)[1]
    else:
        env = make_env(spec, target)
        domain = _find(env, DomainWrapper)
        domain.values = {**domain.values, **known}
        model = load_policy(policy, env)
    try:
        return have + record(model, env, episodes - len(have), path, seed=seed + len(have), known=known)
    finally:
        env.close()


def _holds_episodes(path: Path) -> bool:
    """Whether a rollout file holds at least one line after its run header."""
    return len(read_jsonl(path)) > 1


def parse_known(text: str | None) -> dict[str, float]:
    """Known values written ``name=number,...`` (as on the command line) as a dict; an error naming a bad item."""
    values: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, number = item.partition("=")
        try:
            if not name.strip():
                raise ValueError(item)
            value = float(number)
        except ValueError:
            raise SysIdError(f"known values: {item.strip()!r} is not NAME=NUMBER "
                             f"(e.g. cargo_mass=8,cargo_height=0.1)") from None
        if name.strip() in values:
            raise SysIdError(f"known values: {name.strip()!r} is given twice ({(text or '').strip()!r}); give "
                             f"each parameter once")
        values[name.strip()] = value
    return values


def check_known(spec: TaskSpec, known: Mapping[str, Any], where: str) -> dict[str, float]:
    """`known` as floats, or an error naming a value that is not a numeric domain parameter or out of bounds."""
    if not isinstance(known, Mapping):
        raise SysIdError(f"{where}: 'known' must map parameter names to numbers, got {known!r}")
    checked = {}
    for name, value in known.items():
        if name not in fittable(spec):
            raise SysIdError(f"{where}: {name!r} is not a numeric domain parameter of {spec.name} "
                             f"(allowed: {allowed(fittable(spec))})")
        try:
            checked[name] = float(spec.params[name].validate(value))
        except Sim2RealError as exc:
            raise SysIdError(f"{where}: {exc}") from exc
    return checked


def load_trajectories(path: str | Path, spec: TaskSpec) -> list[Trajectory]:
    """Read a rollout file and check every episode against the task's observation and action sizes."""
    path = Path(path)
    if not path.is_file():
        raise SysIdError(f"rollout file {path} does not exist")
    env = make_env(spec, SOURCE, reality_gap=False)
    obs_size, act_size = _size(env.observation_space), _size(env.action_space)
    action_space = env.action_space
    env.close()
    trajectories = []
    for line, rec in enumerate(read_jsonl(path), start=1):
        where = f"{path}, line {line}"
        if line == 1 and isinstance(rec, dict) and HEADER_KEY in rec:
            continue
        if not isinstance(rec, dict) or not {"seed", "observations", "actions"} <= set(rec):
            raise SysIdError(f"{where}: an episode needs the keys seed, observations, actions")
        try:
            observations = np.asarray(rec["observations"], dtype=float)
            actions = np.asarray(rec["actions"], dtype=float)
        except (TypeError, ValueError) as exc:
            raise SysIdError(f"{where}: observations and actions must be lists of numbers ({exc})") from exc
        if observations.ndim != 2 or observations.shape[1] != obs_size:
            raise SysIdError(f"{where}: observations have shape {observations.shape}, the task "
                             f"{spec.name} needs (steps + 1, {obs_size})")
        if actions.ndim != 2 or actions.shape[1] != act_size:
            raise SysIdError(f"{where}: actions have shape {actions.shape}, the task {spec.name} needs "
                             f"(steps, {act_size})")
        if len(observations) != len(actions) + 1 or len(actions) == 0:
            raise SysIdError(f"{where}: {len(observations)} observations for {len(actions)} actions; "
                             f"expected one more observation than actions, and at least one action")
        _check_values(observations, actions, action_space, where)
        known = check_known(spec, rec.get("known", {}), where)
        trajectories.append(Trajectory(int(rec["seed"]), observations, actions, known))
    if not trajectories:
        raise SysIdError(f"rollout file {path} holds no episode")
    return trajectories


def _check_values(observations: np.ndarray, actions: np.ndarray, action_space: gym.Space, where: str) -> None:
    """Refuse non-finite numbers and actions outside the task's action space (what no policy could have sent)."""
    for name, values in (("observations", observations), ("actions", actions)):
        if not np.isfinite(values).all():
            step, index = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
            raise SysIdError(f"{where}: {name} entry {index} at step {step} is {values[step, index]}; a rollout "
                             f"holds finite numbers only")
    if isinstance(action_space, gym.spaces.Box):
        low, high = action_space.low.ravel(), action_space.high.ravel()
        outside = (actions < low - ACTION_TOLERANCE) | (actions > high + ACTION_TOLERANCE)
        if outside.any():
            step, index = (int(i) for i in np.argwhere(outside)[0])
            raise SysIdError(f"{where}: action {index} at step {step} is {actions[step, index]:g}, outside the "
                             f"task's action space [{low[index]:g}, {high[index]:g}]")


def _size(space: gym.Space) -> int:
    return int(np.prod(space.shape))


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


class Replay:
    """Replays recorded episodes in the task's simulation under candidate domain values.

    Open-loop (no `policy`): the recorded actions are applied in order. Closed-loop (a `policy`,
    the one that recorded the episodes): it acts, deterministically, on the simulated
    observations, as it did on the target. Parameters a fit leaves alone take the `base`
    target's values.
    """

    def __init__(self, spec: TaskSpec, trajectories: Sequence[Trajectory], horizon: int = DEFAULT_HORIZON,
                 policy: Policy | None = None, base: str = SOURCE) -> None:
        self.spec, self.trajectories, self.horizon, self.policy = spec, list(trajectories), horizon, policy
        self.base = spec.domain(base)
        self.env = make_env(spec, SOURCE, reality_gap=False)
        self.domain = _find(self.env, DomainWrapper)

    def simulate(self, values: Mapping[str, Any], trajectory: Trajectory, delay: int) -> np.ndarray:
        """The simulated observations of one episode under `values`, actions applied `delay` steps late."""
        self.domain.values = {**self.base, **values, **trajectory.known}
        env: gym.Env = ActionDelay(self.env, delay) if delay else self.env
        obs, _ = env.reset(seed=trajectory.seed)
        simulated = [np.asarray(obs, dtype=float)]
        for step in range(min(self.horizon, len(trajectory.actions))):
            if self.policy is None:
                action = trajectory.actions[step].astype(np.float32)
            else:
                action = self.policy.predict(obs, deterministic=True)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            simulated.append(np.asarray(obs, dtype=float))
            if terminated or truncated:
                break
        return np.array(simulated)

    def discrepancy(self, values: Mapping[str, Any], delay: int) -> float:
        """Mean squared observation difference per compared step, over every episode.

        A simulated episode that ends before the recorded one (the simulated car left the road)
        is compared over the recording's steps all the same, holding its last observation: a
        candidate must not score better by ending sooner, and the score must not jump when a
        tiny change of the values moves that end by a step.
        """
        total, count = 0.0, 0
        for trajectory in self.trajectories:
            simulated = self.simulate(values, trajectory, delay)
            recorded = trajectory.observations[: self.horizon + 1]
            held = np.repeat(simulated[-1:], len(recorded) - len(simulated), axis=0)
            total += float(np.sum((np.vstack([simulated, held])[1:] - recorded[1:]) ** 2))
            count += recorded[1:].size
        return total / max(count, 1)

    def close(self) -> None:
        """Close the simulation."""
        self.env.close()


def _find(env: gym.Env, kind: type) -> Any:
    while not isinstance(env, kind):
        if not isinstance(env, gym.Wrapper):
            raise SysIdError(f"the task's env has no {kind.__name__}")
        env = env.env
    return env


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
    """The fit that :func:`write_fit` wrote to `path` (fit.json)."""
    path = Path(path)
    if not path.is_file():
        raise SysIdError(f"fit file {path} does not exist")
    data = json.loads(path.read_text())
    return Fit(**{name: data[name] for name in Fit.__dataclass_fields__ if name in data})


def fittable(spec: TaskSpec) -> list[str]:
    """The task's numeric domain parameters: the ones system identification can fit."""
    return [name for name, p in spec.params.items() if not p.choices]


def check_params(spec: TaskSpec, names: Sequence[str]) -> list[DomainParam]:
    """The float domain parameters called `names`, or an error listing the ones that can be fitted."""
    if not names:
        raise SysIdError(f"no parameter to fit; choose among {allowed(fittable(spec))}")
    unknown = [name for name in names if name not in fittable(spec)]
    if unknown:
        raise SysIdError(f"cannot fit {allowed(unknown)}: not a numeric domain parameter of {spec.name} "
                         f"(fittable: {allowed(fittable(spec))})")
    return [spec.params[name] for name in names]


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


def check_fit_request(
    task: str | Path | TaskSpec,
    trajectories: Sequence[Trajectory] | str | Path,
    params: Sequence[str],
    *,
    budget: int,
    seed: int,
    horizon: int,
    max_delay: int = 3,
    policy: Policy | None = None,
    base: str = SOURCE,
    delay: int | None = None,
) -> tuple[TaskSpec, list[DomainParam], Sequence[Trajectory]]:
    """Everything `identify` checks before its search: the task, the parameters and the episodes, loaded."""
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
    return spec, chosen, trajectories


def identify(
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
    on_start: Callable[[], None] | None = None,
) -> Fit:
    """Fit `params` so that replaying the recorded episodes reproduces the recorded observations.

    The replay is open-loop (the recorded actions), or closed-loop with `policy`, the policy that
    recorded the episodes (see :class:`Replay`). Open-loop replays measure the response to the
    actions before unrecorded actuator noise adds up (inertia, motor force, latency): keep them
    short. Closed-loop replays can run longer, as the policy corrects the simulated car as it did
    the real one, and show what only long stretches show (where the tyres start to slide), but the
    real policy acted on noisy sensors and the simulated one does not, which biases what the noise
    changes (how hard it pushed). So identify in two steps where it matters: open-loop first, then
    closed-loop for the rest with the first fit as `base` and its latency as `delay`.
    Parameters not fitted take the `base` target's values. `on_start` is called once every input
    has been checked, before the search starts. The action latency is `delay` control
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
    import cma  # ~2 s to import: only identification pays it, not every user of the strategies

    spec, chosen, trajectories = check_fit_request(task, trajectories, params, budget=budget, seed=seed,
                                                   horizon=horizon, max_delay=max_delay, policy=policy, base=base,
                                                   delay=delay)
    scales = [_Scale(p) for p in chosen]
    replay = Replay(spec, trajectories, horizon, policy, base)
    try:
        if on_start is not None:
            on_start()
        nominal = {p.name: float(p.nominal) for p in chosen}

        def values_of(x: Sequence[float]) -> dict[str, float]:
            return {s.param.name: s.from_unit(float(u)) for s, u in zip(scales, x, strict=True)}

        def search(x0: Sequence[float], sigma: float, candidates: int,
                   score: Callable[[Sequence[float]], float]) -> cma.CMAEvolutionStrategy:
            options = {"bounds": [0.0, 1.0], "maxfevals": candidates, "seed": seed + 1, "verbose": -9,
                       "popsize": population(len(scales))}
            if len(x0) == 1:
                options["maxstd"] = math.inf  # cma 4.5 cannot cap a 1-D search's step size (it raises instead)
            strategy = cma.CMAEvolutionStrategy(list(x0), sigma, options)
            while not strategy.stop():
                asked = strategy.ask()
                strategy.tell(asked, [score(x) for x in asked])
                log.info("CMA-ES generation %d: best discrepancy so far %.5f (%d candidates)",
                         strategy.countiter, strategy.result.fbest, strategy.result.evaluations)
            return strategy

        x0 = [s.to_unit(nominal[s.param.name]) for s in scales]
        if delay is not None:  # no latency to choose: one uninterrupted search keeps what CMA-ES learnt
            fixed = search(x0, 0.25, budget, lambda x: replay.discrepancy(values_of(x), delay))
            latency, evaluations = delay, fixed.result.evaluations
            best, stds = fixed.result.xfavorite, fixed.result.stds
        else:
            delays = range(max_delay + 1)

            def over_delays(x: Sequence[float]) -> float:
                return min(replay.discrepancy(values_of(x), d) for d in delays)

            joint = search(x0, 0.25, max(6, budget // (2 * len(delays))), over_delays)
            best, stds = joint.result.xfavorite, joint.result.stds
            latency = min(delays, key=lambda d: replay.discrepancy(values_of(best), d))
            evaluations = (joint.result.evaluations + 1) * len(delays)
            if budget - evaluations >= 10:
                refine = search(best, 0.1, budget - evaluations,
                                lambda x: replay.discrepancy(values_of(x), latency))
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
                   "open-loop" if policy is None else "closed-loop", base)
    finally:
        replay.close()


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
