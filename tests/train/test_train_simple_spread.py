"""A short QMIX run on simple_spread beats the random policy's greedy-evaluation return clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmix_edge.envs import make_env
from qmix_edge.envs.baselines import random_team_return
from qmix_edge.train.trainer import Trainer


@pytest.mark.slow
def test_short_simple_spread_run_beats_random(tmp_path: Path) -> None:
    trainer = Trainer(
        "qmix",
        env="simple_spread",
        seed=1,
        config={"eval_interval": 10**9, "checkpoint_interval": 0, "eval_episodes": 32},
        run_dir=tmp_path / "r",
    )
    result = trainer.train(total_timesteps=60_000)
    random_return = random_team_return(
        make_env("simple_spread"), trainer.eval_seeds
    )  # the same 32 eval episodes
    assert random_return < -70  # all 25 steps counted
    assert result["mean_reward"] > random_return + 8, (result["mean_reward"], random_return)
