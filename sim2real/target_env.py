"""The one way to name and open the env a policy acts on: a local target of the task, or a testbed (shielded).

Commands that act on a target (evaluate, record, adapt) take either a local `target` or a
`testbed` address, never both; their run records say which, the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from sim2real.errors import Sim2RealError
from sim2real.factory import make_env
from sim2real.rundir import RunRecord
from sim2real.spec import SOURCE, TaskSpec
from sim2real.testbed.remote_policy import connect
from sim2real.zoo import policy_sha256

if TYPE_CHECKING:
    from sim2real.testbed.credentials import Credentials


def check_target_or_testbed(target: str, testbed: str | None, doing: str) -> None:
    """Refuse a local target given beside a testbed: the testbed is the target."""
    if testbed is not None and target != SOURCE:
        raise Sim2RealError(f"target {target!r} given with a testbed: the testbed is the target, so --target "
                            f"applies to local {doing} only")


def target_run(command: str, policy: str | Path, spec: TaskSpec, target: str, testbed: str | None, seed: int,
               **settings: Any) -> RunRecord:
    """The run record of `command` acting with `policy` on a local target or a testbed (see rundir)."""
    return RunRecord(command, {"policy": str(policy), "policy_sha256": policy_sha256(policy), "task": spec.name,
                               "task_hash": spec.spec_hash, "target": "testbed" if testbed else target,
                               "seed": seed, **settings})


def open_target(spec: TaskSpec, target: str, testbed: str | None, model: Any,
                credentials: Credentials | None = None) -> gym.Env:
    """The testbed at `testbed` behind a SafetyShield (spaces checked against `model`), or the task's local `target`."""
    if testbed is not None:
        return connect(testbed, model, credentials=credentials)[1]
    return make_env(spec, target)
