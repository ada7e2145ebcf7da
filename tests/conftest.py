"""Fixtures shared by every test folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command's ``main()`` run in-process configures the root logger (``logging.basicConfig``)
    with a handler on the stderr pytest captured for that test; take it away again afterwards, so
    a later test's log line never goes to a stream that is closed by then."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)
