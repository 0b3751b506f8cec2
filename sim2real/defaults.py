"""Default settings shared by the library and the command line, in a module light enough for `--help` to import."""

from __future__ import annotations

SYSID_HORIZON = 40
"""Control steps of each episode compared: an open-loop replay drifts apart from the recording later on."""

RECORD_EPISODES = 10
"""Target episodes `sysid_finetune` / `adapt` record per round."""

SYSID_BUDGET = 400
"""Discrepancy evaluations of each CMA-ES fit in `sysid_finetune` / `adapt`."""

SIM_STEPS = 60_000
"""Fine-tuning steps in the fitted simulator per round of `sysid_finetune` / `adapt`."""

ROUNDS = 2
"""Rounds of record, fit and fine-tune in `sysid_finetune` / `adapt`."""

EVAL_SEED = 1_000_000
"""Episode i of every evaluation is reset with seed EVAL_SEED + i: apart from training's, the same for every policy."""
