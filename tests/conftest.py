"""Shared fixtures: one torch thread (2-core CI machine, reproducible numbers)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    torch.set_num_threads(1)
