"""How identification tightens with more recorded episodes: fit disjoint subsets of recordings, report the scatter.

Records `--episodes` episodes of POLICY on TARGET once, fits PARAMS to each disjoint subset of
each size (sim2real.sysid.fit_subsets) and prints, per size, the estimates' mean, range and error
against the target's values (the truth, for the shipped stand-ins). With `--known` every other
episode is recorded with those values set (e.g. a payload of known mass), so every subset holds
as many episodes with them as without. With `--closed`, each fit is a two-step identification:
the open-loop fit of PARAMS, then the `--closed` parameters refitted closed-loop with POLICY on
top of it (sim2real.sysid.refine_closed_loop).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sim2real import catalog
from sim2real.factory import make_env
from sim2real.sysid import DEFAULT_HORIZON, check_known, fit_subsets, parse_known, record_episode
from sim2real.zoo import load_policy

RECORD_SEED = 5_000_000  # apart from training and evaluation seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy")
    parser.add_argument("--task", required=True)
    parser.add_argument("--target", default="real")
    parser.add_argument("--params", required=True, help="comma-separated parameters to fit")
    parser.add_argument("--episodes", type=int, default=40, help="episodes recorded in all")
    parser.add_argument("--sizes", default="5,10,20", help="comma-separated subset sizes")
    parser.add_argument("--budget", type=int, default=150, help="discrepancy evaluations per fit")
    parser.add_argument("--horizon", type=int, default=DEFAULT_HORIZON, help="control steps compared per episode")
    parser.add_argument("--known", default=None, help="NAME=NUMBER,... set on every other recorded episode")
    parser.add_argument("--closed", default=None,
                        help="comma-separated parameters to refit closed-loop after each open-loop fit")
    parser.add_argument("--closed-budget", type=int, default=300, help="evaluations of the closed-loop step")
    parser.add_argument("--closed-horizon", type=int, default=80, help="steps compared in the closed-loop step")
    parser.add_argument("--out", default=None, help="JSON file for the estimates")
    args = parser.parse_args()
    spec = catalog.load(args.task)
    params = [p.strip() for p in args.params.split(",") if p.strip()]
    truth = spec.domain(args.target)
    known = check_known(spec, parse_known(args.known), where="--known")
    env = make_env(spec, args.target)
    policy = load_policy(args.policy, env)
    recordings = []
    for i in range(args.episodes):
        changes = known if i % 2 else {}
        env.set_wrapper_attr("values", {**truth, **changes})  # the DomainWrapper's values
        recordings.append(record_episode(policy, env, seed=RECORD_SEED + i, known=changes))
    env.close()
    sizes = [int(s) for s in args.sizes.split(",")]
    closed = [p.strip() for p in args.closed.split(",") if p.strip()] if args.closed else []
    refine = {"params": closed, "policy": policy, "budget": args.closed_budget,
              "horizon": args.closed_horizon} if closed else None
    results = fit_subsets(spec, recordings, params, sizes, refine, budget=args.budget, horizon=args.horizon)
    for size, fits in results.items():
        parts = []
        for name in dict.fromkeys([*params, *closed]):
            values = np.array([fit[name] for fit in fits])
            worst = np.max(np.abs(values / float(truth[name]) - 1.0))
            parts.append(f"{name} mean {values.mean():.4g}, range {values.min():.4g}–{values.max():.4g}, "
                         f"worst error {worst:.1%}")
        print(f"{size} episodes × {len(fits)} subsets: " + "; ".join(parts), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"truth": {name: truth[name] for name in [*params, *closed]}, "fits": results}, handle,
                      indent=1)


if __name__ == "__main__":
    main()
