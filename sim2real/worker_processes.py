"""Where sim2real's light worker processes (env groups, fit replays) come from: one multiprocessing context.

"forkserver" by default (as SB3's SubprocVecEnv): safe beside torch's threads, and a worker forks
from a server that has already imported the modules it needs, so it is ready in milliseconds. The
server is one per process and imports what was asked when it first starts; later requests add
nothing. ``S2R_START`` names another start method ("spawn", "fork") for debugging.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.context import BaseContext


def worker_context(preload: Sequence[str]) -> BaseContext:
    """The context to start workers with; a fork server not yet running will import `preload` once."""
    context = multiprocessing.get_context(os.environ.get("S2R_START", "forkserver"))
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(list(preload))
    return context
