"""Shared fixtures of the train tests: one torch thread (the shrunk defaults are in train_helpers)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)
