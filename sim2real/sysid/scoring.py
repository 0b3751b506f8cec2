"""Candidate scoring for the fit: each candidate's discrepancy at its best latency, here or over worker processes.

A CMA-ES generation is a batch of independent replays (two dozen candidates × every latency ×
every episode), so it spreads over cores with nothing to share but the candidates and their
scores. Each replay resets its env with the recorded seed, so a candidate scores the same in any
process: the fit is the same whatever the number of workers. Only open-loop replays travel (a
closed-loop replay needs the recording policy in every worker); a closed-loop fit scores here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np

from sim2real.episode import Policy
from sim2real.spec import SOURCE, TaskSpec
from sim2real.sysid.params import SysIdError
from sim2real.sysid.replay import Replay
from sim2real.sysid.trajectories import Trajectory
from sim2real.worker_processes import worker_context

Candidate = Mapping[str, Any]

_worker_replay: Replay | None = None
"""The replay a worker process scores with, opened once by :func:`_open_replay`."""


class Scorer:
    """Scores batches of candidate domain values against the recordings, spread over `workers` processes.

    This process scores the first share of each batch itself and each of ``workers - 1`` worker
    processes (forked from a server that imported only the env modules) one of the others.
    ``replay`` (this process's) also serves single discrepancies.
    """

    def __init__(self, spec: TaskSpec, trajectories: Sequence[Trajectory], horizon: int,
                 policy: Policy | None = None, base: str = SOURCE, workers: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SysIdError(f"workers (processes replaying candidates) must be an integer >= 1, got {workers!r}")
        self.replay = Replay(spec, trajectories, horizon, policy, base)
        self.workers = workers if policy is None else 1
        self.pool: Executor | None = None
        if self.workers > 1:
            context = worker_context(["sim2real.sysid.scoring", "sim2real.factory", "sim2real.bullet"])
            self.pool = ProcessPoolExecutor(self.workers - 1, mp_context=context, initializer=_open_replay,
                                            initargs=(spec, tuple(trajectories), horizon, base))

    def scores(self, candidates: Sequence[Candidate], delays: Sequence[int]) -> list[float]:
        """Each candidate's lowest discrepancy over `delays`, in the candidates' order."""
        shares = [list(share) for share in np.array_split(np.arange(len(candidates)), self.workers)]
        futures = [self.pool.submit(_score_share, [candidates[i] for i in share], tuple(delays))
                   for share in shares[1:] if share] if self.pool is not None else []
        here = _score(self.replay, [candidates[i] for i in shares[0]], delays)
        return here + [score for future in futures for score in future.result()]

    def close(self) -> None:
        """Stop the workers and close the simulation."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.replay.close()


def _score(replay: Replay, candidates: Sequence[Candidate], delays: Sequence[int]) -> list[float]:
    return [min(replay.discrepancy(values, delay) for delay in delays) for values in candidates]


def _open_replay(spec: TaskSpec, trajectories: Sequence[Trajectory], horizon: int, base: str) -> None:
    global _worker_replay
    _worker_replay = Replay(spec, trajectories, horizon, None, base)


def _score_share(candidates: Sequence[Candidate], delays: Sequence[int]) -> list[float]:
    assert _worker_replay is not None, "a scoring worker opens its replay when it starts"
    return _score(_worker_replay, candidates, delays)
