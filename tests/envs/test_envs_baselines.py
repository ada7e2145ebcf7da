"""The random-policy yardstick: uniform among available actions, every step counted."""

from __future__ import annotations

from qmix_edge.envs import TwoStepGame, make_env
from qmix_edge.envs.baselines import random_team_return


def test_random_return_on_the_two_step_game_is_its_expectation() -> None:
    # half the episodes reach 2A (always 7), half 2B (mean of [[0, 1], [1, 8]] = 2.5): 4.75
    r = random_team_return(TwoStepGame(), seeds=range(2000), rng_seed=3)
    assert 4.4 < r < 5.1


def test_random_policy_only_takes_available_actions() -> None:
    # masked_choice raises on a masked action, so finishing proves the mask was honoured
    env = make_env("masked_choice")
    assert isinstance(random_team_return(env, seeds=range(20)), float)


def test_same_seeds_same_return() -> None:
    env = make_env("simple_spread")
    assert random_team_return(env, [1, 2], rng_seed=5) == random_team_return(
        env, [1, 2], rng_seed=5
    )
