"""What the demo runs: per far target, each transfer lever with the shipped policies, seeds and budgets.

These are the demo's defaults; `settings()` writes them into demo.json, and the README's demo
section is checked against them (tests/test_readme.py), so the README cannot show numbers from
other settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Retraining:
    """Partial retraining on the target with the harness: `strategies` from `policy` against scratch."""

    policy: str
    strategies: tuple[str, ...]
    budget: int
    eval_every: int
    episodes: int = 10
    seeds: int = 3


@dataclass(frozen=True)
class Transductive:
    """The record → fit the simulator → fine-tune loop (`sim2real adapt`) from `policy`, no target reward used."""

    policy: str
    strategy: str
    eval_episodes: int = 50


@dataclass(frozen=True)
class FarTarget:
    """One far target of a task and the levers the demo pulls on it.

    `transductive` is None where the loop does not pay; `why_no_transductive` then says what was measured.
    """

    task: str
    target: str
    nominal: str
    randomized: str
    retraining: Retraining
    transductive: Transductive | None = None
    why_no_transductive: str = ""


@dataclass(frozen=True)
class OnTheTestbed:
    """A short adaptation over the testbed: a stand-in of `target` served at its control rate, behind a key."""

    task: str
    target: str
    policy: str
    strategy: str
    budget: int
    eval_every: int
    episodes: int = 10


ZERO_SHOT_EPISODES = 50
"""Episodes per zero-shot evaluation of the nominal and the randomized policy on each far target."""

FAR_TARGETS = (
    FarTarget("driving", "truck", nominal="driving-ppo-nominal", randomized="driving-ppo-dr",
              retraining=Retraining("driving-ppo-nominal", ("zero_shot", "residual", "scratch"),
                                    budget=8_000, eval_every=2_000),
              why_no_transductive="fitting the simulator to truck recordings reached the threshold on 1 seed of 5 "
                                  "(README)"),
    FarTarget("grasping", "warehouse", nominal="grasping-ppo-nominal", randomized="grasping-ppo-dr",
              retraining=Retraining("grasping-sac-nominal", ("zero_shot", "finetune:utd=2", "scratch"),
                                    budget=4_000, eval_every=1_000),
              transductive=Transductive("grasping-ppo-nominal", "sysid_finetune:rounds=1:sim_steps=60000")),
)

TESTBED = OnTheTestbed("grasping", "warehouse", "grasping-sac-nominal", "finetune:utd=2", budget=4_000,
                       eval_every=2_000)


def policies(far_targets: Sequence[FarTarget], testbed: OnTheTestbed | None) -> list[str]:
    """Every policy the demo starts from, in order of first use."""
    names = []
    for case in far_targets:
        names += [case.nominal, case.randomized, case.retraining.policy]
        names += [case.transductive.policy] if case.transductive else []
    names += [testbed.policy] if testbed else []
    return list(dict.fromkeys(names))


def settings(far_targets: Sequence[FarTarget] = FAR_TARGETS, testbed: OnTheTestbed | None = TESTBED,
             zero_shot_episodes: int = ZERO_SHOT_EPISODES) -> dict[str, Any]:
    """A demo's settings as JSON (by default the demo's defaults): what demo.json records, and what the
    README's demo section must have been run with; each policy by the hash of its model, so a
    retrained zoo is a different demo."""
    from sim2real.zoo import policy_sha256

    return json.loads(json.dumps({"zero_shot_episodes": zero_shot_episodes,
                                  "far_targets": [asdict(case) for case in far_targets],
                                  "testbed": None if testbed is None else asdict(testbed),
                                  "policies": {name: policy_sha256(name) for name in policies(far_targets, testbed)}}))
