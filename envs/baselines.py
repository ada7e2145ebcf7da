"""Reference policies to measure a trained team against (numpy only, no torch).

`random_team_return` is the yardstick the tests and bench/ use: the uniform-random policy (among each
agent's available actions) evaluated on the same episode seeds as the greedy evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import TeamEnv


def random_team_return(env: TeamEnv, seeds: Sequence[int], rng_seed: int = 0) -> float:
    """Mean team return of uniformly random available actions over episodes reset with ``seeds``.

    Every step of every episode counts (nothing is dropped at the time limit).
    """
    rng = np.random.default_rng(rng_seed)
    returns = []
    for seed in seeds:
        view, total, done = env.reset(seed=seed), 0.0, False
        while not done:
            # a random score per action, -1 where unavailable: argmax = uniform among available ones
            scores = np.where(
                view.avail, rng.random(view.avail.shape), -1.0
            )  # (n_agents, n_actions)
            res = env.step(scores.argmax(axis=-1))
            total += res.reward
            view, done = res.next, res.done
        returns.append(total)
    return float(np.mean(returns))
