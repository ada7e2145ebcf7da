"""The batched simple_spread equals mpe2's simple_spread_v3 (through PettingZooTeamEnv) episode for episode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qmix_edge.envs import EnvError, TeamEnv, make_env, make_vector_env
from qmix_edge.envs.batched_mpe import BatchedSimpleSpread, supports_batched_spread

pytest.importorskip("mpe2")

ATOL = 1e-5  # float32 rounding of values of order 1-10; on this stack the two agree bit for bit


def _toward_nearest_landmark(obs: np.ndarray, n: int) -> np.ndarray:
    """A trained-policy-like greedy team: every agent heads for its nearest landmark.

    Agents that share a nearest landmark run into each other, so these episodes are full of
    collisions (the local reward term and the contact forces). obs (E, N, D) -> actions (E, N).
    """
    rel = obs[:, :, 4 : 4 + 2 * n].reshape(obs.shape[0], n, n, 2)  # (E, agent, landmark, 2)
    target = rel[np.arange(obs.shape[0])[:, None], np.arange(n), np.abs(rel).sum(-1).argmin(-1)]
    dx, dy = target[..., 0], target[..., 1]
    horizontal = np.where(dx < 0, 1, 2)
    vertical = np.where(dy < 0, 3, 4)
    return np.where(np.abs(dx) > np.abs(dy), horizontal, vertical).astype(np.int64)


def _replay_and_compare(
    n_agents: int, policy: str, episodes: int, n_envs: int = 6, **env_kwargs: Any
) -> int:
    """Play ``episodes`` waves in both engines with the same seeds and actions; returns collisions."""
    kwargs = {"N": n_agents, **env_kwargs}
    batched = BatchedSimpleSpread(n_envs, env_kwargs=kwargs)
    singles: list[TeamEnv] = [make_env("simple_spread", env_kwargs=kwargs) for _ in range(n_envs)]
    assert batched.spec == singles[0].spec
    rng = np.random.default_rng(7)
    collisions = 0
    for _ in range(episodes):
        seeds = rng.integers(0, 2**31 - 1, n_envs).tolist()
        view = batched.reset_all(seeds)
        refs = [env.reset(seed=s) for env, s in zip(singles, seeds, strict=True)]
        np.testing.assert_allclose(view.obs, np.stack([r.obs for r in refs]), rtol=0, atol=ATOL)
        np.testing.assert_allclose(view.state, np.stack([r.state for r in refs]), rtol=0, atol=ATOL)
        for _ in range(batched.spec.episode_limit):
            if policy == "random":
                actions = rng.integers(0, 5, (n_envs, n_agents))
            else:
                actions = _toward_nearest_landmark(view.obs, n_agents)
            res = batched.step(actions)
            assert res.active.all()
            steps = [env.step(a) for env, a in zip(singles, actions, strict=True)]
            for name in ("obs", "state", "avail", "alive"):
                np.testing.assert_allclose(
                    getattr(res.next, name),
                    np.stack([getattr(s.next, name) for s in steps]),
                    rtol=0,
                    atol=ATOL,
                    err_msg=name,
                )
            np.testing.assert_allclose(res.reward, [s.reward for s in steps], rtol=0, atol=ATOL)
            np.testing.assert_allclose(
                res.agent_rewards, np.stack([s.agent_rewards for s in steps]), rtol=0, atol=ATOL
            )
            np.testing.assert_array_equal(res.truncated, [s.truncated for s in steps])
            np.testing.assert_array_equal(res.terminated, [s.terminated for s in steps])
            # agents' rewards differ only by the local collision term
            collisions += int(
                (np.ptp(np.stack([s.agent_rewards for s in steps]), axis=1) > 0).sum()
            )
            view = res.next
        assert batched.finished.all()
    return collisions


@pytest.mark.parametrize("policy", ["random", "greedy"])
def test_batched_spread_equals_mpe2_for_whole_episodes(policy: str) -> None:
    collisions = _replay_and_compare(3, policy, episodes=4)
    assert collisions > 20  # the comparison covered many collision steps


def test_batched_spread_equals_mpe2_with_other_sizes_and_options() -> None:
    assert _replay_and_compare(4, "greedy", episodes=1, local_ratio=0.3, max_cycles=30) > 0
    assert _replay_and_compare(1, "random", episodes=1) == 0


def test_partial_resets_leave_other_worlds_alone_and_mean_reward() -> None:
    batched = BatchedSimpleSpread(3, team_reward="mean")
    single = make_env("simple_spread", team_reward="mean")
    batched.reset_envs([1], [5])
    assert batched.finished.tolist() == [True, False, True]
    with pytest.raises(EnvError, match="not available"):
        batched.step(np.array([[0, 0, 0], [0, 9, 0], [0, 0, 0]]))
    ref = single.reset(seed=5)
    for t in range(25):
        actions = np.full((3, 3), t % 5)
        res = batched.step(actions)
        r = single.step(actions[1])
        assert res.active.tolist() == [False, True, False]
        assert res.reward[0] == 0 and res.reward[2] == 0
        assert res.reward[1] == pytest.approx(r.reward, abs=ATOL)
        np.testing.assert_allclose(res.next.obs[1], r.next.obs, atol=ATOL)
        ref = r.next
    assert res.truncated.tolist() == [False, True, False]
    assert batched.finished.all()
    first = batched.reset_envs([2, 0], [5, 6])
    np.testing.assert_allclose(first.obs[0], single.reset(seed=5).obs, atol=ATOL)
    assert ref.obs.shape == first.obs[0].shape


def test_unsupported_options_are_refused_with_the_way_out() -> None:
    assert supports_batched_spread("simple_spread", {"N": 4, "local_ratio": 0.2})
    assert supports_batched_spread("mpe2:simple_spread_v3", {})
    assert not supports_batched_spread("simple_spread", {"continuous_actions": True})
    assert not supports_batched_spread("simple_reference", {})
    with pytest.raises(EnvError, match=r"terminate_on_success=True.*vector='sync'"):
        BatchedSimpleSpread(2, env_kwargs={"terminate_on_success": True})


def test_make_vector_env_builds_the_batched_engine() -> None:
    venv = make_vector_env("simple_spread", 5, backend="batched")
    assert isinstance(venv, BatchedSimpleSpread)
    assert venv.spec == make_env("simple_spread").spec
    with pytest.raises(EnvError, match=r"batched.*simple_spread"):
        make_vector_env("two_step", 2, backend="batched")
