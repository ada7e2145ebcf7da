"""Shared fixtures of the train tests: one torch thread (the shrunk defaults are in train_helpers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def plain_logging() -> Iterator[None]:
    """Log records of qmix_edge go to pytest's capture, not to a handler an earlier test left.

    An in-process ``qmix-export`` earlier in the suite leaves its handler on the ``qmix_edge``
    logger, bound to that test's captured stderr; tests that read a CLI's stderr use this.
    """
    logger = logging.getLogger("qmix_edge")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers.clear()
    logger.propagate = True
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
