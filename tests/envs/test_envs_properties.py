"""Property tests of the adapter's episode-end rules on envs whose agents leave at random times."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qmix_edge.envs import make_env


@settings(max_examples=40, deadline=None)
@given(
    lifetimes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    max_cycles=st.integers(1, 10),
    limit=st.one_of(st.none(), st.integers(1, 12)),
)
def test_envs_leaving_agents_end_rules(
    lifetimes: list[int], max_cycles: int, limit: int | None
) -> None:
    env = make_env(
        "leaving_agents",
        n_agents=len(lifetimes),
        episode_limit=limit,
        env_kwargs={"lifetimes": lifetimes, "max_cycles": max_cycles},
    )
    horizon = min(max_cycles, limit or max_cycles)
    assert env.spec.episode_limit == horizon
    ts = env.reset(seed=0)
    life = np.asarray(lifetimes)
    t = 0
    while True:
        assert ts.alive.tolist() == (life > t).tolist()
        res = env.step(np.zeros(len(lifetimes), np.int64))
        t += 1
        ts = res.next
        if res.done:
            break
        assert not res.terminated and not res.truncated
    # The episode lasts until every agent has left or the horizon, whichever comes first.
    assert t == min(int(life.max()), horizon)
    # A real terminal only when the last agents left by termination before any time limit cut them.
    assert res.terminated == (int(life.max()) <= horizon)
    assert res.truncated == (not res.terminated)
    # The final view reports the agents that acted on the last step (for bootstrapping).
    assert ts.alive.tolist() == (life >= t).tolist()
