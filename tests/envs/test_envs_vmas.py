"""VMAS scenarios as team envs (``vmas:<scenario>``): spaces, VMAS's own numbers, episode ends,
world independence, masks, random streams, and the errors that say what to do."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from qmix_edge.envs import (
    EnvError,
    UnsupportedEnvError,
    VmasTeamEnv,
    VmasVectorEnv,
    make_env,
    make_vector_env,
    supports_batched,
)
from qmix_edge.envs.vmas_env import group_seed

vmas = pytest.importorskip("vmas")
torch = pytest.importorskip("torch")

CUSTOM = "vmas:vmas_test_scenarios:"  # tests/envs/vmas_test_scenarios.py


def _raw(scenario: str, n_envs: int, **kwargs: Any) -> Any:
    """VMAS's own env, made the way the adapter makes it (discrete flat actions, no horizon)."""
    return vmas.make_env(
        scenario, num_envs=n_envs, continuous_actions=False, terminated_truncated=True, **kwargs
    )


def _raw_step(raw: Any, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step VMAS's own env; (obs (E, N, D) of equal-size agents, rewards (E, N), terminated (E,))."""
    obs, rews, term, _, _ = raw.step(
        [torch.as_tensor(actions[:, j]) for j in range(actions.shape[1])]
    )
    return (
        np.stack([o.numpy() for o in obs], axis=1),
        np.stack([r.numpy() for r in rews], axis=1),
        term.numpy().astype(bool),
    )


# --- spaces and shapes ----------------------------------------------------------------------------
def test_vmas_balance_spec_and_shapes() -> None:
    venv = make_vector_env("vmas:balance", 5, backend="batched", env_kwargs={"max_steps": 7})
    assert isinstance(venv, VmasVectorEnv) and venv.n_envs == 5
    spec = venv.spec
    assert spec.env_id == "vmas:balance"
    assert spec.agent_ids == ("agent_0", "agent_1", "agent_2")
    assert {(a.obs_dim, a.n_actions) for a in spec.agents} == {(16, 9)}
    assert spec.state_dim == 48 and spec.episode_limit == 7 and not spec.has_action_masks
    assert dict(spec.env_kwargs) == {"max_steps": 7, "n_agents": 3}
    view = venv.reset_all(list(range(5)))
    assert view.obs.shape == (5, 3, 16) and view.obs.dtype == np.float32
    assert view.state.shape == (5, 48) and view.avail.shape == (5, 3, 9)
    assert view.avail.all() and view.alive.all()
    np.testing.assert_array_equal(view.state, view.obs.reshape(5, 48))  # concatenated observations


def test_vmas_n_agents_is_the_scenarios_team_size_where_it_has_one() -> None:
    nav = make_env("vmas:navigation", n_agents=2, env_kwargs={"max_steps": 5})
    assert nav.spec.n_agents == 2 and nav.spec.env_kwargs["n_agents"] == 2
    own = make_env("vmas:navigation", n_agents=2, env_kwargs={"max_steps": 5, "n_agents": 5})
    assert own.spec.n_agents == 5
    fixed = make_env("vmas:give_way", n_agents=3, episode_limit=5)  # a two-agent scenario
    assert fixed.spec.n_agents == 2 and "n_agents" not in fixed.spec.env_kwargs


def test_vmas_heterogeneous_agents_are_padded_and_the_state_is_their_true_observations() -> None:
    venv = VmasVectorEnv(3, env_id="vmas:simple_speaker_listener", env_kwargs={"max_steps": 5})
    dims = [(a.obs_dim, a.n_actions) for a in venv.spec.agents]
    assert dims == [(3, 27), (11, 9)]  # speaker: 3 messages x 9 moves; listener: 9 moves
    view = venv.reset_all([1, 2, 3])
    assert view.obs.shape == (3, 2, 11) and view.avail.shape == (3, 2, 27)
    assert view.avail[:, 0].all() and view.avail[:, 1, :9].all() and not view.avail[:, 1, 9:].any()
    assert not view.obs[:, 0, 3:].any()  # padding
    np.testing.assert_array_equal(
        view.state, np.concatenate([view.obs[:, 0, :3], view.obs[:, 1]], 1)
    )
    raw = _raw("simple_speaker_listener", 3)
    obs = raw.reset(seed=group_seed([1, 2, 3]))
    np.testing.assert_array_equal(view.obs[:, 0, :3], obs[0].numpy())
    np.testing.assert_array_equal(view.obs[:, 1], obs[1].numpy())


# --- equal to VMAS's own env ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "kwargs", "steps"),
    [("balance", {}, 80), ("transport", {"n_agents": 3}, 20), ("navigation", {"n_agents": 3}, 20)],
)
def test_vmas_batched_worlds_equal_vmas_own_step(scenario: str, kwargs: dict, steps: int) -> None:
    n_envs, seeds = 12, list(range(100, 112))
    venv = VmasVectorEnv(
        n_envs, env_id=f"vmas:{scenario}", env_kwargs={**kwargs, "max_steps": steps}
    )
    raw = _raw(scenario, n_envs, **kwargs)
    view = venv.reset_all(seeds)
    raw_obs = raw.reset(seed=group_seed(seeds))
    np.testing.assert_array_equal(view.obs, np.stack([o.numpy() for o in raw_obs], axis=1))
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(steps):
        actions = rng.integers(0, 9, (n_envs, venv.spec.n_agents))
        res = venv.step(actions)
        obs, rews, term = _raw_step(raw, actions)
        on = res.active
        np.testing.assert_array_equal(res.next.obs[on], obs[on])
        np.testing.assert_array_equal(res.agent_rewards[on], rews[on])
        np.testing.assert_array_equal(res.reward[on], rews[on].sum(axis=1, dtype=np.float32))
        np.testing.assert_array_equal(res.terminated[on], term[on])
        ended += int(res.terminated.sum())
    assert venv.finished.all()
    if scenario == "balance":
        assert ended > 0  # the package fell in some worlds: VMAS's done() is our terminal


def test_vmas_one_world_env_is_vmas_reset_with_the_same_seed() -> None:
    env = make_env("vmas:navigation", n_agents=2, team_reward="mean", env_kwargs={"max_steps": 15})
    assert isinstance(env, VmasTeamEnv)
    raw = _raw("navigation", 1, n_agents=2)
    ts = env.reset(seed=11)
    np.testing.assert_array_equal(ts.obs, np.stack([o[0].numpy() for o in raw.reset(seed=11)]))
    rng = np.random.default_rng(1)
    for _ in range(15):
        actions = rng.integers(0, 9, 2)
        res = env.step(actions)
        obs, rews, _ = _raw_step(raw, actions[None])
        np.testing.assert_array_equal(res.next.obs, obs[0])
        np.testing.assert_array_equal(res.agent_rewards, rews[0])
        assert res.reward == pytest.approx(float(rews[0].sum() / 2), abs=1e-6)
    assert res.truncated and not res.terminated
    with pytest.raises(EnvError, match="call reset"):
        env.step(np.zeros(2, np.int64))


# --- episode ends ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_steps", "episode_limit", "limit"), [(4, None, 4), (4, 3, 3), (None, 2, 2)]
)
def test_vmas_episode_ends_at_the_limit(
    max_steps: int | None, episode_limit: int | None, limit: int
) -> None:
    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    venv = VmasVectorEnv(3, env_id="vmas:transport", episode_limit=episode_limit, env_kwargs=kwargs)
    assert venv.spec.episode_limit == limit
    venv.reset_all([0, 1, 2])
    zeros = np.zeros((3, venv.spec.n_agents), np.int64)
    for t in range(1, limit + 1):
        res = venv.step(zeros)
        assert res.active.all() and not res.terminated.any()
        assert res.truncated.all() == (t == limit) and res.truncated.any() == (t == limit)
    assert venv.finished.all()
    after = venv.step(zeros)  # finished worlds are not stepped: views frozen, no reward
    assert not after.active.any() and not after.reward.any() and not after.truncated.any()
    np.testing.assert_array_equal(after.next.obs, res.next.obs)


def test_vmas_scenario_done_is_a_terminal_and_wins_over_the_limit() -> None:
    venv = VmasVectorEnv(
        2, env_id=CUSTOM + "MaskedScenario", env_kwargs={"max_steps": 3, "done_at": 3}
    )
    view = venv.reset_all([0, 1])
    for _ in range(3):
        res = venv.step(view.avail.argmax(-1))  # the first allowed action of each agent
        view = res.next
    assert res.terminated.all() and not res.truncated.any() and venv.finished.all()


# --- worlds are independent ----------------------------------------------------------------------
def test_vmas_a_worlds_actions_never_reach_another_world() -> None:
    a = VmasVectorEnv(3, env_id="vmas:navigation", env_kwargs={"max_steps": 10, "n_agents": 3})
    b = VmasVectorEnv(3, env_id="vmas:navigation", env_kwargs={"max_steps": 10, "n_agents": 3})
    a.reset_all([4, 5, 6])
    b.reset_all([4, 5, 6])
    rng = np.random.default_rng(2)
    for _ in range(10):
        acts = rng.integers(0, 9, (3, 3))
        other = acts.copy()
        other[2] = rng.integers(0, 9, 3)  # world 2 acts differently in b
        ra, rb = a.step(acts), b.step(other)
        np.testing.assert_array_equal(ra.next.obs[:2], rb.next.obs[:2])
        np.testing.assert_array_equal(ra.agent_rewards[:2], rb.agent_rewards[:2])
    assert not np.array_equal(ra.next.obs[2], rb.next.obs[2])


def test_vmas_a_world_reset_alone_starts_from_its_seed_whatever_n_envs() -> None:
    starts = []
    for n_envs in (2, 5):
        venv = VmasVectorEnv(n_envs, env_id="vmas:balance", env_kwargs={"max_steps": 5})
        venv.reset_all(list(range(n_envs)))
        starts.append(venv.reset_envs([1], [9]).obs[0])
    single = make_env("vmas:balance", env_kwargs={"max_steps": 5}).reset(seed=9).obs
    np.testing.assert_array_equal(starts[0], starts[1])
    np.testing.assert_array_equal(starts[0], single)


def test_vmas_resetting_one_world_leaves_the_others_running() -> None:
    kw = {"max_steps": 8, "n_agents": 2}
    a = VmasVectorEnv(2, env_id="vmas:navigation", env_kwargs=kw)
    b = VmasVectorEnv(2, env_id="vmas:navigation", env_kwargs=kw)
    acts = np.random.default_rng(3).integers(0, 9, (6, 2, 2))
    for env in (a, b):
        env.reset_all([1, 2])
        env.step(acts[0])
    first = a.reset_envs([0], [7])
    assert first.obs.shape == (1, 2, a.spec.max_obs_dim)
    for k in range(1, 6):
        ra, rb = a.step(acts[k]), b.step(acts[k])
        np.testing.assert_array_equal(ra.next.obs[1], rb.next.obs[1])
        np.testing.assert_array_equal(ra.agent_rewards[1], rb.agent_rewards[1])
    assert a.t.tolist() == [5, 6]


def test_vmas_each_env_keeps_its_own_random_streams() -> None:
    """A noisy scenario: an episode's rewards depend on its seed and actions only, not on what other
    VMAS envs (or torch's global generator) do in between."""
    kw = {"max_steps": 6, "noise": 1.0}

    def episode(interleave: bool) -> np.ndarray:
        env = VmasVectorEnv(1, env_id=CUSTOM + "MaskedScenario", env_kwargs=kw)
        other = VmasVectorEnv(2, env_id=CUSTOM + "MaskedScenario", env_kwargs=kw)
        view = env.reset_all([5])
        rewards = []
        for k in range(6):
            if interleave:
                first = other.reset_all([99, 98])
                other.step(first.avail.argmax(-1))
                torch.manual_seed(k)
            res = env.step(view.avail.argmax(-1))
            rewards.append(res.agent_rewards[0])
            view = res.next
        return np.array(rewards)

    np.testing.assert_array_equal(episode(False), episode(True))


# --- masks ----------------------------------------------------------------------------------------
def test_vmas_masks_from_the_scenarios_info_are_honoured() -> None:
    venv = VmasVectorEnv(
        2, env_id=CUSTOM + "MaskedScenario", env_kwargs={"max_steps": 10, "block_all_at": 2}
    )
    assert venv.spec.has_action_masks
    view = venv.reset_all([0, 1])
    np.testing.assert_array_equal(view.avail[:, 0], np.tile(np.arange(9) % 2 == 0, (2, 1)))
    assert view.avail[:, 1].sum(axis=1).tolist() == [8, 8] and not view.avail[:, 1, 0].any()
    with pytest.raises(EnvError, match=r"action 1 is not available to agent 'agent_0'.*No env"):
        venv.step(np.array([[0, 1], [1, 1]]))
    res = venv.step(np.array([[0, 1], [2, 1]]))
    assert res.active.all() and not res.next.avail[:, 1, 1].any()  # t = 1: action 1 is out
    res = venv.step(np.array([[0, 2], [0, 2]]))
    # t = 2: agent_1's mask allows nothing; action 0 stands in
    np.testing.assert_array_equal(res.next.avail[:, 1], np.tile(np.arange(9) == 0, (2, 1)))


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "kwargs", "error", "match"),
    [
        ("vmas:balanse", {"max_steps": 5}, EnvError, r"unknown VMAS scenario 'balanse'.*Did you mean 'balance'"),
        ("vmas:", {}, EnvError, r"expected an env id 'vmas:<scenario>'"),
        ("vmas:balance", {}, EnvError, r"no episode length of their own; give one as env_kwargs max_steps"),
        ("vmas:balance", {"max_steps": 0}, EnvError, r"max_steps must be a positive number"),
        ("vmas:balance", {"max_steps": 5, "continuous_actions": True}, UnsupportedEnvError, r"discrete actions only.*drop continuous_actions"),
        ("vmas:balance", {"max_steps": 5, "device": "cuda"}, EnvError, r"\['device'\] are VMAS's own make_env options.*Remove them"),
        ("vmas:give_way", {"max_steps": 5, "speed": 1}, EnvError, r"does not read env_kwargs \['speed'\]"),
        ("vmas:no_such_module:X", {"max_steps": 5}, EnvError, r"could not import module 'no_such_module'"),
        (CUSTOM + "NotAScenario", {"max_steps": 5}, EnvError, r"subclass of VMAS's BaseScenario"),
        (CUSTOM + "DictObsScenario", {"max_steps": 5}, UnsupportedEnvError, r"agent 'agent_0' observes Dict.*one flat observation"),
    ],
)  # fmt: skip
def test_vmas_errors_say_what_was_expected(
    env_id: str, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        make_env(env_id, env_kwargs=kwargs)


@pytest.mark.parametrize("missing", ["vmas", "torch"])
def test_vmas_missing_extra_names_it(missing: str) -> None:
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        "from qmix_edge.envs import EnvError, make_env\n"
        "try:\n"
        "    make_env('vmas:balance', env_kwargs={'max_steps': 5})\n"
        "except EnvError as e:\n"
        "    print(e); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"needs {missing!r}, which is not installed" in proc.stdout
    assert "pip install 'qmix-edge[vmas]'" in proc.stdout


def test_vmas_has_a_batched_engine() -> None:
    assert supports_batched("vmas:balance", {})
    assert not supports_batched("two_step", {})
    with pytest.raises(EnvError, match="batched engines step simple_spread"):
        make_vector_env("two_step", 2, backend="batched")
