"""Property tests of team envs: the adapter's episode-end rules on envs whose agents leave at random
times, and the team-env contract shared by the PettingZoo envs and the Gymnasium multi-agent
adapters (lbforaging, rware, a fake of the same shape).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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


# -- the team-env contract, shared by the PettingZoo envs and the Gymnasium multi-agent adapters ----

TEAM_ENVS = {
    "simple_spread": ("simple_spread", {}, None),
    "masked_choice": ("masked_choice", {}, None),
    "leaving_agents": ("leaving_agents", {}, None),
    "speaker_pair": ("speaker_pair", {}, None),
    "lbforaging": ("lbforaging:Foraging-8x8-2p-2f-coop-v3", {}, None),
    "lbforaging_short": ("lbforaging:Foraging-5x5-2p-1f-coop-v3", {"max_episode_steps": 30}, None),
    "rware": ("rware:rware-tiny-2ag-v2", {}, 40),
    "gymma_fake": (
        "gymma_fakes:FakeTeam-v0",
        {"n": 3, "lifetimes": (2, 4, 9), "masks": True},
        None,
    ),
}


def _play(env_id: str, kwargs: dict, limit: int | None, seed: int, action_seed: int) -> list:
    env = make_env(env_id, episode_limit=limit, env_kwargs=kwargs)
    spec = env.spec
    n, d, k = spec.n_agents, spec.max_obs_dim, spec.max_n_actions
    rng = np.random.default_rng(action_seed)
    ts = env.reset(seed=seed)
    trace: list = []
    t = 0
    while True:
        assert ts.obs.shape == (n, d) and ts.obs.dtype == np.float32
        assert ts.avail.shape == (n, k) and ts.avail.dtype == bool
        assert ts.state.shape == (spec.state_dim,) and ts.state.dtype == np.float32
        for i, a in enumerate(spec.agents):
            assert ts.avail[i].any()  # an agent always has an action (a placeholder if absent)
            assert not ts.avail[i, a.n_actions :].any()
            assert not ts.obs[i, a.obs_dim :].any()
            if not ts.alive[i]:
                assert not ts.obs[i].any()
        acts = np.array([rng.choice(np.flatnonzero(row)) for row in ts.avail], np.int64)
        res = env.step(acts)
        t += 1
        assert res.reward == pytest.approx(float(res.agent_rewards.sum()), abs=1e-5)
        assert not (res.agent_rewards[~ts.alive]).any()
        trace.append(
            (ts.obs.copy(), ts.state.copy(), acts, res.reward, res.terminated, res.truncated)
        )
        ts = res.next
        if res.done:
            break
        assert not res.terminated and not res.truncated
    assert t <= spec.episode_limit
    assert res.terminated != res.truncated  # exactly one reason to end
    if t == spec.episode_limit and env_id.startswith(("lbforaging", "rware")):
        assert res.truncated  # their own time limit is a cut, not a terminal
    env.close()
    return trace


@pytest.mark.parametrize("name", list(TEAM_ENVS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), action_seed=st.integers(0, 2**16))
def test_envs_team_env_contract(name: str, seed: int, action_seed: int) -> None:
    env_id, kwargs, limit = TEAM_ENVS[name]
    first = _play(env_id, kwargs, limit, seed, action_seed)
    again = _play(env_id, kwargs, limit, seed, action_seed)
    # Seeded episodes are a function of the seed and the actions.
    assert len(first) == len(again)
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
