"""Gymnasium multi-agent envs in EPyMARL's convention (lbforaging, rware, a fake) as team envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qmix_edge.envs import EnvError, UnsupportedEnvError, make_env
from qmix_edge.envs.gym_multiagent import GymMultiAgentParallelEnv

LBF = "lbforaging:Foraging-8x8-2p-2f-coop-v3"
RWARE = "rware:rware-tiny-2ag-v2"
FAKE = "gymma_fakes:FakeTeam-v0"


@pytest.mark.parametrize(
    ("env_id", "n", "obs_dim", "n_actions", "limit"),
    [(LBF, 2, 12, 6, 50), (RWARE, 2, 71, 5, 500), ("rware:rware-small-4ag-v2", 4, 71, 5, 500)],
)
def test_envs_gymma_spaces_and_limit_from_the_registration(
    env_id: str, n: int, obs_dim: int, n_actions: int, limit: int
) -> None:
    env = make_env(env_id, n_agents=7)  # n_agents is the env's own, not the config's
    spec = env.spec
    assert spec.agent_ids == tuple(f"agent_{i}" for i in range(n))
    assert [(a.obs_dim, a.n_actions) for a in spec.agents] == [(obs_dim, n_actions)] * n
    assert spec.state_dim == n * obs_dim
    assert spec.episode_limit == limit
    assert spec.env_id == env_id and not spec.has_action_masks


@pytest.mark.parametrize("env_id", [LBF, RWARE])
@pytest.mark.parametrize("team_reward", ["sum", "mean"])
def test_envs_gymma_matches_the_raw_env(env_id: str, team_reward: str) -> None:
    env = make_env(env_id, team_reward=team_reward, episode_limit=40)  # type: ignore[arg-type]
    raw = gym.make(env_id.split(":")[1], disable_env_checker=True)
    ts = env.reset(seed=3)
    obs, _ = raw.reset(seed=3)
    rng = np.random.default_rng(0)
    for _t in range(40):
        np.testing.assert_array_equal(ts.obs, np.stack(obs))
        np.testing.assert_array_equal(ts.state, np.concatenate(obs))
        acts = rng.integers(0, env.spec.max_n_actions, size=env.spec.n_agents)
        res = env.step(acts)
        obs, rewards, _done, _trunc, _ = raw.step(acts.tolist())
        np.testing.assert_allclose(res.agent_rewards, rewards)
        expected = float(np.sum(rewards)) / (env.spec.n_agents if team_reward == "mean" else 1)
        assert res.reward == pytest.approx(expected)
        ts = res.next
        if res.done:
            break
    assert res.done and res.truncated and not res.terminated  # cut at 40, as truncation


def test_envs_gymma_own_limit_is_truncation_and_real_end_is_termination() -> None:
    env = make_env("lbforaging:Foraging-5x5-2p-1f-coop-v3")
    ends = []
    for seed in range(12):
        env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        t, ret = 0, 0.0
        while True:
            res = env.step(rng.integers(0, 6, size=2))
            t, ret = t + 1, ret + res.reward
            if res.done:
                break
        ends.append((t, res.terminated, res.truncated, ret))
    # lbforaging reports its own 50-step limit as done=True; here it is a truncation.
    assert all(tr and not te and t == 50 for t, te, tr, _ in ends if t == 50)
    # All food eaten before the limit (the whole reward, 1.0, collected) is a real terminal.
    real = [(t, ret) for t, te, tr, ret in ends if te]
    assert real and all(t < 50 and ret == pytest.approx(1.0) for t, ret in real)


@pytest.mark.parametrize(
    ("env_kwargs", "limit"),
    [({"max_episode_steps": 7}, 7), ({"max_episode_steps": 60}, 60), ({}, 50)],
)
def test_envs_gymma_env_kwargs_set_the_env_limit(env_kwargs: dict, limit: int) -> None:
    env = make_env("lbforaging:Foraging-8x8-2p-1f-coop-v3", env_kwargs=env_kwargs)
    assert env.spec.episode_limit == limit
    assert env.spec.env_kwargs == env_kwargs
    env.reset(seed=0)
    t = 0
    while True:
        res = env.step(np.zeros(2, np.int64))  # standing still never eats the food
        t += 1
        if res.done:
            break
    assert (t, res.terminated, res.truncated) == (limit, False, True)


def test_envs_gymma_rware_max_steps_kwarg() -> None:
    env = make_env(RWARE, env_kwargs={"max_steps": 9})
    assert env.spec.episode_limit == 9


def test_envs_gymma_per_agent_done_masks_and_shared_reward() -> None:
    env = make_env(FAKE, env_kwargs={"n": 3, "lifetimes": (2, 4, 9), "masks": True})
    assert env.spec.has_action_masks and env.spec.episode_limit == 6
    ts = env.reset(seed=0)
    assert ts.avail.tolist() == [[True, True, False]] * 3
    with pytest.raises(EnvError, match="action 2 is not available"):
        env.step(np.array([2, 0, 0]))
    alive = []
    while True:
        res = env.step(np.array([1, 1, 1]))
        alive.append(res.next.alive.tolist())
        if res.done:
            break
    # Agents leave one by one; the last one is cut by the 6-step limit (truncation).
    assert alive == [[True, True, True]] + [[False, True, True]] * 2 + [[False, False, True]] * 3
    assert res.truncated and not res.terminated
    shared = make_env(FAKE, env_kwargs={"shared_reward": True})
    shared.reset(seed=0)
    res = shared.step(np.array([1, 2]))
    assert res.agent_rewards.tolist() == [3.0, 3.0] and res.reward == 6.0


def test_envs_gymma_image_observations_are_flattened() -> None:
    env = make_env(FAKE, env_kwargs={"obs_shape": (2, 3)})
    assert env.spec.agents[0].obs_dim == 6
    ts = env.reset(seed=0)
    assert ts.obs[1].tolist() == [0, 1, 0, 0, 0, 0]


def test_envs_gymma_errors_name_the_reading() -> None:
    with pytest.raises(UnsupportedEnvError, match=r"multi-agent env .*MultiDiscrete"):
        make_env(FAKE, env_kwargs={"multidiscrete": True})
    with pytest.raises(UnsupportedEnvError, match="independent copies"):
        make_env("Pendulum-v1")
    with pytest.raises(
        EnvError, match=r"rejected env_kwargs .*multi-agent env .* or a single-agent env"
    ):
        make_env(FAKE, env_kwargs={"no_such_kwarg": 1})
    with pytest.raises(EnvError, match=r"rejected env_kwargs .*max_episode_steps"):
        make_env(LBF, env_kwargs={"max_episode_steps": 0})
    with pytest.raises(EnvError, match="episode limit must be a positive"):
        make_env(RWARE, env_kwargs={"max_steps": 0})


def test_envs_gymma_passes_parallel_api_test() -> None:
    from pettingzoo.test import parallel_api_test

    parallel_api_test(GymMultiAgentParallelEnv("Foraging-8x8-2p-2f-coop-v3"), num_cycles=60)
    parallel_api_test(
        GymMultiAgentParallelEnv("FakeTeam-v0", {"n": 3, "lifetimes": (2, 4, 9)}), num_cycles=20
    )
