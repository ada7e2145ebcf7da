"""Fixtures of the runtime tests: an in-process coordinator on port 0 (see runtime_doubles)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runtime_doubles import Harness, two_step_team

from qmix_edge.envs import TwoStepGame
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig


@pytest.fixture
def make_harness(tmp_path: Any) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(env: Any = None, record: bool = True, **config: Any) -> Harness:
        cfg = CoordinatorConfig(**{"team_wait_s": 10.0, **config})
        record_path = tmp_path / f"records{len(made)}.jsonl" if record else None
        h = Harness(
            Coordinator(
                two_step_team(),
                cfg,
                env=env
                if env is not None
                else (TwoStepGame() if cfg.mode == "simulation" else None),
                record_path=record_path,
            ),
            record_path,
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.coordinator.close(grace_s=0.5)
