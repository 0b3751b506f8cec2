"""How identification tightens with more recorded episodes: fit disjoint subsets of recordings, report the spread.

Records `--episodes` episodes of POLICY on TARGET once, splits them into disjoint subsets of each
size, fits PARAMS to each subset and prints, per size, every subset's estimates and their error
against the target's true values (known for the shipped stand-ins).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from sim2real import catalog
from sim2real.factory import make_env
from sim2real.sysid import identify, record_episode
from sim2real.zoo import load_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy")
    parser.add_argument("--task", required=True)
    parser.add_argument("--target", default="real")
    parser.add_argument("--params", required=True, help="comma-separated parameters to fit")
    parser.add_argument("--episodes", type=int, default=40, help="episodes recorded in all")
    parser.add_argument("--sizes", default="5,10,20", help="comma-separated subset sizes")
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    spec = catalog.load(args.task)
    params = [p.strip() for p in args.params.split(",") if p.strip()]
    truth = spec.domain(args.target)
    env = make_env(spec, args.target)
    policy = load_policy(args.policy, env)
    recordings = [record_episode(policy, env, seed=5_000_000 + i) for i in range(args.episodes)]
    env.close()
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        fits = [identify(spec, recordings[start:start + size], params, budget=args.budget).values
                for start in range(0, args.episodes - size + 1, size)]
        errors = {p: [f[p] / float(truth[p]) - 1.0 for f in fits] for p in params}
        results[size] = {"fits": fits, "errors": errors}
        summary = ", ".join(f"{p} error {np.mean(np.abs(e)):.1%} mean |.|, {max(np.abs(e)):.1%} worst"
                            for p, e in errors.items())
        print(f"{size} episodes × {len(fits)} disjoint subsets: {summary}", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"truth": {p: truth[p] for p in params}, "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
