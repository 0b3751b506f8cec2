"""The main job: every transfer lever on every far target with the shipped policies (`sim2real demo`).

Where each part lives: ``cases`` (what the demo runs), ``levers`` (each measurement as a
``LeverResult``), ``summary`` (demo.json), ``page`` (index.md and the README section), ``run``
(running it), ``readme`` (keeping the README's section equal to a kept run). Names are imported on
first use, so reading a summary or the defaults costs no torch import.
"""

from __future__ import annotations

from sim2real.lazy import lazy_names

_LAZY = {
    "PAGE": "sim2real.demo.page",
    "DemoSummary": "sim2real.demo.summary",
    "read_summary": "sim2real.demo.summary",
    "run_demo": "sim2real.demo.run",
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
__all__ = sorted(_LAZY)
