"""A Gymnasium id as a team of independent copies (the seed's CartPole-v1 quick start)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from qmix_edge.envs import make_env
from qmix_edge.envs.gym_team import GymCopiesParallelEnv


def test_envs_gym_copies_pass_parallel_api_test() -> None:
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(GymCopiesParallelEnv("CartPole-v1", 3), num_cycles=200)


def test_envs_cartpole_team_matches_independent_copies() -> None:
    env = make_env("CartPole-v1", n_agents=3)
    spec = env.spec
    assert spec.agent_ids == ("agent_0", "agent_1", "agent_2")
    assert (spec.max_obs_dim, spec.max_n_actions, spec.state_dim, spec.episode_limit) == (
        4,
        2,
        12,
        500,
    )
    singles = [gym.make("CartPole-v1") for _ in range(3)]
    ts = env.reset(seed=10)
    obs = [s.reset(seed=10 + i)[0] for i, s in enumerate(singles)]
    np.testing.assert_allclose(ts.obs, np.stack(obs))
    np.testing.assert_allclose(ts.state, np.concatenate(obs))
    done = [False] * 3
    total = 0.0
    t = 0
    while True:
        acts = np.array([(t + i) % 2 if i < 2 else 1 for i in range(3)], np.int64)
        res = env.step(acts)
        t += 1
        expected_reward = 0.0
        for i, s in enumerate(singles):
            if done[i]:
                continue
            o, r, te, tr, _ = s.step(int(acts[i]))
            expected_reward += r
            done[i] = te or tr
            if not res.done:
                assert res.next.alive[i] == (not done[i])
                if not done[i]:
                    np.testing.assert_allclose(res.next.obs[i], o)
        assert res.reward == expected_reward
        total += res.reward
        if res.done:
            break
    assert all(done)
    assert res.terminated and not res.truncated  # the last copy fell over
    assert total > 0


def test_envs_gym_time_limit_is_truncation() -> None:
    env = make_env("CartPole-v1", n_agents=2, env_kwargs={"max_episode_steps": 5})
    assert env.spec.episode_limit == 5
    env.reset(seed=0)
    flags = []
    while True:
        res = env.step(np.array([0, 1], np.int64))
        flags.append((res.terminated, res.truncated))
        if res.done:
            break
    assert flags == [(False, False)] * 4 + [(False, True)]
