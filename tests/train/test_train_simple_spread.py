"""A short QMIX run on simple_spread beats the random policy's greedy-evaluation return clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmix_edge.envs import make_env
from qmix_edge.train.trainer import Trainer


def _random_return(seeds: list[int]) -> float:
    env = make_env("simple_spread")
    rng = np.random.default_rng(0)
    returns = []
    for seed in seeds:
        view, total, done = env.reset(seed=seed), 0.0, False
        while not done:
            actions = np.array([rng.choice(np.flatnonzero(a)) for a in view.avail])
            res = env.step(actions)
            total += res.reward
            view, done = res.next, res.done
        returns.append(total)
    return float(np.mean(returns))


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
    random_return = _random_return(trainer.eval_seeds)  # the same 32 eval episodes
    assert random_return < -70  # all 25 steps counted
    assert result["mean_reward"] > random_return + 8, (result["mean_reward"], random_return)
