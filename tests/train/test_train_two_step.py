"""The QMIX paper's two-step game (Rashid et al. 2018, Figure 3 / Table 1).

Under uniform exploration (epsilon 1 throughout, as in the paper) QMIX represents the joint-action
values well enough that its greedy policy goes to state 2B and earns the optimum 8, while VDN's
additive factorisation underestimates 2B and its greedy policy settles for 7.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import TWO_STEP_PAPER, tiny

from qmix_edge.train.trainer import Trainer


@pytest.mark.parametrize(("algo", "expected"), [("qmix", 8.0), ("vdn", 7.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_step_game_greedy_return(algo: str, expected: float, seed: int, tmp_path: Path) -> None:
    trainer = Trainer(
        algo, env="two_step", seed=seed, config=tiny(**TWO_STEP_PAPER), run_dir=tmp_path / "r"
    )
    result = trainer.train(total_timesteps=4000)
    assert result["updates"] > 1900
    assert result["mean_reward"] == expected
