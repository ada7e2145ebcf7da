"""Trainer.train(max_seconds=...) ends a run early on wall time, then evaluates and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import tiny

from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.errors import ConfigError
from qmix_edge.train.trainer import Trainer


def test_max_seconds_stops_early_and_still_finishes_the_run(tmp_path: Path) -> None:
    trainer = Trainer("qmix", env="two_step", config=tiny(), run_dir=tmp_path / "r")
    result = trainer.train(total_timesteps=10**9, max_seconds=1e-6)
    assert result["env_steps"] < 10**9
    assert load_run(tmp_path / "r", "last").step == result["env_steps"]
    assert trainer.last_eval["step"] == result["env_steps"]
    with pytest.raises(ConfigError, match="max_seconds must be a positive number"):
        trainer.train(total_timesteps=10**9, max_seconds=0)
