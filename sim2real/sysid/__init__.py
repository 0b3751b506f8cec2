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

The package, in the order of the data: :mod:`.params` (what can be fitted, known values),
:mod:`.trajectories` (recording and rollout files), :mod:`.replay` (episodes replayed under
candidate values), :mod:`.scoring` (a generation's replays over worker processes),
:mod:`.identification` (the CMA-ES fit), :mod:`.report` (the fit's folder).
"""

from sim2real.sysid.identification import (
    FITTED_TARGET,
    Fit,
    Problem,
    check_budget,
    fit_subsets,
    fitted_task,
    identify,
    prepare,
    read_fit,
    refine_closed_loop,
    solve,
)
from sim2real.sysid.params import SysIdError, check_known, check_params, fittable, parse_known
from sim2real.sysid.replay import DEFAULT_HORIZON, Replay
from sim2real.sysid.report import claim_fit_folder, write_fit
from sim2real.sysid.trajectories import (
    Trajectory,
    load_trajectories,
    record,
    record_episode,
    record_policy,
    recorded_steps,
)

__all__ = [
    "DEFAULT_HORIZON",
    "FITTED_TARGET",
    "Fit",
    "Problem",
    "Replay",
    "SysIdError",
    "Trajectory",
    "check_budget",
    "check_known",
    "check_params",
    "claim_fit_folder",
    "fit_subsets",
    "fittable",
    "fitted_task",
    "identify",
    "load_trajectories",
    "parse_known",
    "prepare",
    "read_fit",
    "record",
    "record_episode",
    "record_policy",
    "recorded_steps",
    "refine_closed_loop",
    "solve",
    "write_fit",
]
