"""The PettingZoo adapter on mpe2 and the toy envs: shapes, state, rewards, masks, leavers, limits."""

from __future__ import annotations

import warnings

import envs_fakes
import numpy as np
import pytest

from qmix_edge.envs import EnvError, PettingZooTeamEnv, TeamEnv, make_env
from qmix_edge.envs.toy import LeavingAgentsEnv, MaskedChoiceEnv, MaskedNoopEnv, SpeakerPairEnv


def _random_episode(env: TeamEnv, seed: int, action_seed: int = 0) -> list:
    """Play one episode with random allowed actions; return (obs, state, reward, flags) per step."""
    rng = np.random.default_rng(action_seed)
    ts = env.reset(seed=seed)
    trace = [(ts.obs.copy(), ts.state.copy())]
    while True:
        acts = np.array([rng.choice(np.flatnonzero(row)) for row in ts.avail], dtype=np.int64)
        res = env.step(acts)
        ts = res.next
        trace.append(
            (
                ts.obs.copy(),
                ts.state.copy(),
                res.reward,
                res.terminated,
                res.truncated,
                res.agent_rewards,
            )
        )
        if res.done:
            return trace


def _equal_traces(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        all(np.array_equal(x, y) for x, y in zip(sa, sb, strict=True))
        for sa, sb in zip(a, b, strict=True)
    )


# -- parallel_api_test on every PettingZoo env we define ------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        MaskedChoiceEnv,
        lambda: MaskedChoiceEnv(n_agents=3, mask_in="info", on_masked="count"),
        LeavingAgentsEnv,
        lambda: LeavingAgentsEnv(lifetimes=(2, 30, 40)),
        SpeakerPairEnv,
        MaskedNoopEnv,
        lambda: MaskedNoopEnv(n_agents=3, mask_in="info", on_masked="count"),
    ],
    ids=[
        "masked_obs",
        "masked_info",
        "leaving",
        "leaving_truncated",
        "speaker_pair",
        "masked_noop",
        "masked_noop_info",
    ],
)
def test_envs_builtin_toys_pass_parallel_api_test(factory) -> None:
    from pettingzoo.test import parallel_api_test

    env = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports problems as warnings
        parallel_api_test(env, num_cycles=60)


def test_envs_masked_noop_masks_action_0_on_its_schedule_and_raises_on_it() -> None:
    env = MaskedNoopEnv(n_agents=2, n_actions=4, max_cycles=30)
    obs, _ = env.reset(seed=3)
    masked_noop = 0
    for t in range(30):
        for i, a in enumerate(env.agents):
            mask, target = obs[a]["action_mask"], int(np.argmax(obs[a]["observation"][:4]))
            assert mask[target]  # the target is always allowed
            if t % 3 == 2:
                assert mask.sum() == 1  # nothing but the target
            elif (t + i) % 2 == 1 and target != 0:
                assert not mask[0]
            masked_noop += int(not mask[0])
        obs, *_ = env.step({a: int(np.flatnonzero(obs[a]["action_mask"])[-1]) for a in env.agents})
    assert masked_noop >= 15  # the default fallback action is masked often
    obs, _ = env.reset(seed=3)
    while all(obs[a]["action_mask"][0] for a in env.agents):
        obs, *_ = env.step({a: int(np.flatnonzero(obs[a]["action_mask"])[-1]) for a in env.agents})
    with pytest.raises(ValueError, match="took masked action 0"):
        env.step(dict.fromkeys(env.agents, 0))


# -- simple_spread -----------------------------------------------------------------------------


def test_envs_simple_spread_shapes_state_and_truncation() -> None:
    env = make_env("simple_spread")
    spec = env.spec
    assert spec.agent_ids == ("agent_0", "agent_1", "agent_2")
    assert (spec.max_obs_dim, spec.max_n_actions, spec.state_dim, spec.episode_limit) == (
        18,
        5,
        54,
        25,
    )
    assert spec.env_kwargs == {"N": 3}
    ts = env.reset(seed=3)
    assert ts.obs.shape == (3, 18) and ts.obs.dtype == np.float32
    assert ts.avail.shape == (3, 5) and ts.avail.all()
    assert ts.alive.all()
    np.testing.assert_array_equal(ts.state, np.asarray(env.env.state(), np.float32))  # type: ignore[attr-defined]
    trace = _random_episode(env, seed=3)
    assert len(trace) - 1 == 25
    *_, last = trace
    assert last[3] is False and last[4] is True  # terminated False, truncated True at the limit
    # The final view is well-formed for bootstrapping: real observations, everyone reported.
    assert np.abs(last[0]).sum() > 0
    with pytest.raises(EnvError, match="episode is over"):
        env.step(np.zeros(3, np.int64))


def test_envs_simple_spread_state_is_env_state_every_step() -> None:
    # The adapter builds mpe2's state from the step's observations; it must equal env.state().
    env = make_env("simple_spread", n_agents=4)
    assert env.state_from_observations  # type: ignore[attr-defined]
    ts = env.reset(seed=9)
    rng = np.random.default_rng(1)
    while True:
        np.testing.assert_array_equal(ts.state, np.asarray(env.env.state(), np.float32))  # type: ignore[attr-defined]
        res = env.step(rng.integers(0, 5, 4))
        ts = res.next
        if res.done:
            break
    np.testing.assert_array_equal(ts.state, np.asarray(env.env.state(), np.float32))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("simple_spread_v3", {"N": 3}),
        ("simple_spread_v3", {"N": 4, "max_cycles": 9, "local_ratio": 0.2}),
        ("simple_speaker_listener_v4", {}),
        ("simple_reference_v3", {}),
    ],
)
def test_envs_mpe2_direct_stepping_equals_the_parallel_wrapper(name: str, kwargs: dict) -> None:
    import importlib

    module = importlib.import_module(f"mpe2.{name}")
    fast = PettingZooTeamEnv(module.parallel_env(**kwargs), env_id=name)
    slow = PettingZooTeamEnv(module.parallel_env(**kwargs), env_id=name, fast_mpe2=False)
    assert fast.steps_mpe2_directly and not slow.steps_mpe2_directly
    for seed in (0, 1, 2):
        a = _random_episode(fast, seed=seed, action_seed=seed)
        b = _random_episode(slow, seed=seed, action_seed=seed)
        assert _equal_traces(a, b), (name, seed)


def test_envs_simple_spread_n_agents_sets_n() -> None:
    env = make_env("mpe2:simple_spread_v3", n_agents=2)
    assert env.spec.n_agents == 2 and env.spec.env_kwargs == {"N": 2}


def test_envs_team_reward_sum_and_mean() -> None:
    summed = make_env("simple_spread", team_reward="sum")
    mean = make_env("simple_spread", team_reward="mean")
    for env in (summed, mean):
        env.reset(seed=11)
    acts = np.array([1, 2, 3], np.int64)
    rs, rm = summed.step(acts), mean.step(acts)
    np.testing.assert_allclose(rs.agent_rewards, rm.agent_rewards)
    assert rs.reward == pytest.approx(float(rs.agent_rewards.sum()), rel=1e-6)
    assert rm.reward == pytest.approx(rs.reward / 3, rel=1e-6)


def test_envs_episode_limit_argument_cuts_as_truncation() -> None:
    env = make_env("simple_spread", episode_limit=4)
    assert env.spec.episode_limit == 4
    trace = _random_episode(env, seed=0)
    assert len(trace) - 1 == 4 and trace[-1][4] is True and trace[-1][3] is False
    # A limit above the env's own is capped at the env's.
    assert make_env("simple_spread", episode_limit=100).spec.episode_limit == 25


def test_envs_seed_makes_episodes_deterministic() -> None:
    for env_id in ("simple_spread", "masked_choice", "speaker_pair", "CartPole-v1"):
        a, b = make_env(env_id), make_env(env_id)
        assert _equal_traces(_random_episode(a, seed=7), _random_episode(b, seed=7)), env_id
        # and the same env object replays too, after another episode in between
        first = _random_episode(a, seed=5)
        _random_episode(a, seed=6)
        assert _equal_traces(first, _random_episode(a, seed=5)), env_id
    # different seeds differ (sanity: the seed is forwarded at all)
    env = make_env("simple_spread")
    assert not np.array_equal(env.reset(seed=1).obs, env.reset(seed=2).obs)


# -- heterogeneous agents ------------------------------------------------------------------------


def test_envs_speaker_listener_is_padded() -> None:
    env = make_env("simple_speaker_listener")
    spec = env.spec
    assert [(a.agent_id, a.obs_dim, a.n_actions) for a in spec.agents] == [
        ("speaker_0", 3, 3),
        ("listener_0", 11, 5),
    ]
    assert spec.heterogeneous and spec.state_dim == 14
    ts = env.reset(seed=0)
    assert ts.obs.shape == (2, 11) and ts.avail.shape == (2, 5)
    assert not ts.obs[0, 3:].any()  # the speaker's padding stays zero
    np.testing.assert_array_equal(ts.avail[0], [True, True, True, False, False])
    with pytest.raises(EnvError, match="action 4 is not available to agent 'speaker_0'"):
        env.step(np.array([4, 0], np.int64))
    _random_episode(env, seed=0)


def test_envs_speaker_pair_state_and_sizes() -> None:
    env = make_env("speaker_pair")
    assert [(a.obs_dim, a.n_actions) for a in env.spec.agents] == [(3, 3), (4, 5)]
    ts = env.reset(seed=1)
    goal = int(np.argmax(ts.obs[0, :3]))
    res = env.step(np.array([goal, 0], np.int64))
    np.testing.assert_array_equal(res.next.obs[1, :3], np.eye(3)[goal])  # the word arrived
    res = env.step(np.array([goal, goal], np.int64))
    assert res.reward == 2.0  # both agents are paid the shared reward
    np.testing.assert_array_equal(res.next.state, np.asarray(env.env.state()))  # type: ignore[attr-defined]


# -- action masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_in", ["obs", "info"])
def test_envs_masks_are_honoured(mask_in: str) -> None:
    env = make_env("masked_choice", n_agents=3, env_kwargs={"mask_in": mask_in, "n_actions": 6})
    assert env.spec.has_action_masks
    raw: MaskedChoiceEnv = env.env  # type: ignore[attr-defined]
    ts = env.reset(seed=4)
    total = 0.0
    while True:
        for i, a in enumerate(env.spec.agent_ids):
            np.testing.assert_array_equal(ts.avail[i], raw.action_mask(a).astype(bool))
        # greedy on the one-hot target: always allowed, always paid
        res = env.step(ts.obs[:, :6].argmax(axis=1).astype(np.int64))
        total += res.reward
        ts = res.next
        if res.done:
            break
    assert total == 3 * raw.max_cycles
    assert raw.masked_actions_taken == 0


def test_envs_masked_action_raises_before_reaching_env() -> None:
    env = make_env("masked_choice", env_kwargs={"n_actions": 8})
    raw: MaskedChoiceEnv = env.env  # type: ignore[attr-defined]
    for seed in range(20):
        ts = env.reset(seed=seed)
        blocked = np.flatnonzero(~ts.avail[0])
        if blocked.size:
            break
    acts = ts.avail.argmax(axis=1).astype(np.int64)
    acts[0] = blocked[0]
    with pytest.raises(EnvError, match=f"action {blocked[0]} is not available to agent 'agent_0'"):
        env.check_actions(acts, ts)
    with pytest.raises(EnvError, match="is not available"):
        env.step(acts)
    assert raw.masked_actions_taken == 0


def test_envs_empty_mask_gets_placeholder_action() -> None:
    env = PettingZooTeamEnv(envs_fakes.empty_mask_env(), env_id="fake")
    ts = env.reset(seed=0)
    np.testing.assert_array_equal(ts.avail, [[False, False, True], [True, True, True]])
    res = env.step(np.array([2, 1], np.int64))
    np.testing.assert_array_equal(res.next.avail[1], [True, False, False])
    assert res.next.alive[1]


# -- agents that leave ----------------------------------------------------------------------------


def test_envs_leaving_agents_alive_flags_and_termination() -> None:
    env = make_env("leaving_agents")  # lifetimes 3, 5, 7 within max_cycles 10
    ts = env.reset(seed=0)
    alive, flags = [ts.alive.copy()], []
    while True:
        res = env.step(np.zeros(3, np.int64))
        alive.append(res.next.alive.copy())
        flags.append((res.terminated, res.truncated))
        # absent agents: zero observation, only the placeholder action 0
        for i in np.flatnonzero(~res.next.alive):
            assert not res.next.obs[i].any()
            np.testing.assert_array_equal(res.next.avail[i], [True, False, False])
            assert res.agent_rewards[i] == 0.0
        if res.done:
            break
    assert [a.tolist() for a in alive] == (
        [[True, True, True]] * 3 + [[False, True, True]] * 2 + [[False, False, True]] * 3
    )
    assert flags[-1] == (True, False) and all(f == (False, False) for f in flags[:-1])


def test_envs_leaving_agents_time_limit_is_truncation() -> None:
    env = make_env("leaving_agents", env_kwargs={"lifetimes": (2, 4, 99), "max_cycles": 6})
    trace = _random_episode(env, seed=0)
    assert len(trace) - 1 == 6 and trace[-1][3:5] == (False, True)


def test_envs_leaving_agents_actions_of_absent_agents_are_ignored() -> None:
    env = make_env("leaving_agents", env_kwargs={"lifetimes": (1, 3, 3)})
    env.reset(seed=0)
    env.step(np.zeros(3, np.int64))
    # agent_0 has left: an unavailable action for it is ignored, not an error
    res = env.step(np.array([2, 0, 0], np.int64))
    assert not res.next.alive[0]


def test_envs_discrete_start_offset_is_applied() -> None:
    raw = envs_fakes.offset_env()
    env = PettingZooTeamEnv(raw, env_id="fake")
    assert env.spec.max_n_actions == 3
    env.reset()
    env.step(np.array([0, 2], np.int64))
    assert raw.received[-1] == {"a": 10, "b": 12}


def test_envs_state_falls_back_to_concatenated_observations() -> None:
    env = make_env("masked_choice", n_agents=2)
    assert env.spec.state_dim == 2 * 5
    ts = env.reset(seed=0)
    np.testing.assert_array_equal(ts.state, ts.obs.reshape(-1))
