"""make_env: the resolution order, the built-in table, and every error path."""

from __future__ import annotations

import numpy as np
import pytest

from qmix_edge.envs import (
    BUILTIN_ENVS,
    EnvError,
    MatrixGame,
    PettingZooTeamEnv,
    TwoStepGame,
    UnsupportedEnvError,
    make_env,
)
from qmix_edge.envs import registry as registry_module


@pytest.mark.parametrize("name", sorted(BUILTIN_ENVS))
def test_envs_every_builtin_name_makes_a_working_env(name: str) -> None:
    env = make_env(name)
    assert env.spec.env_id == name
    ts = env.reset(seed=0)
    res = env.step(ts.avail.argmax(axis=1).astype(np.int64))
    assert res.next.obs.shape == ts.obs.shape


def test_envs_module_attribute_forms() -> None:
    # a module exposing parallel_env (mpe2's attributes are modules)
    assert isinstance(make_env("mpe2:simple_reference_v3"), PettingZooTeamEnv)
    # a factory callable (a class here)
    env = make_env("qmix_edge.envs.toy:LeavingAgentsEnv", n_agents=4)
    assert env.spec.n_agents == 4
    # a factory returning a TeamEnv is used as is
    assert isinstance(make_env("qmix_edge.envs.matrix:TwoStepGame"), TwoStepGame)


def test_envs_gymnasium_module_colon_id_form() -> None:
    env = make_env("gymnasium:CartPole-v1", n_agents=2)
    assert env.spec.n_agents == 2 and env.spec.episode_limit == 500
    assert env.spec.env_id == "gymnasium:CartPole-v1"


def test_envs_matrix_builtins() -> None:
    assert isinstance(make_env("two_step"), TwoStepGame)
    penalty = make_env("penalty")
    assert isinstance(penalty, MatrixGame)
    penalty.reset()
    assert penalty.step(np.array([0, 0], np.int64)).reward == 8.0


def test_envs_env_kwargs_are_forwarded() -> None:
    env = make_env("simple_spread", env_kwargs={"max_cycles": 7, "local_ratio": 0.0})
    assert env.spec.episode_limit == 7
    assert env.spec.env_kwargs == {"max_cycles": 7, "local_ratio": 0.0, "N": 3}


@pytest.mark.parametrize(
    ("env_id", "kwargs", "error", "match"),
    [
        (
            "no_such_env",
            {},
            EnvError,
            r"unknown env id 'no_such_env'\. Tried: .*built-in names.*Gymnasium ids .*accepted forms",
        ),
        (
            "nonexistent_pkg_xyz:thing",
            {},
            EnvError,
            r"could not import module 'nonexistent_pkg_xyz'",
        ),
        (
            "mpe2:no_such_scenario",
            {},
            EnvError,
            r"module 'mpe2' has no attribute or submodule 'no_such_scenario'",
        ),
        ("envs_fakes:not_callable", {}, EnvError, r"expected a ParallelEnv factory .* found int"),
        (
            "envs_fakes:aec_only_module",
            {},
            UnsupportedEnvError,
            r"has no parallel_env \(it only offers the AEC API",
        ),
        (
            "envs_fakes:aec_env",
            {},
            UnsupportedEnvError,
            r"expected a PettingZoo ParallelEnv; found _AecLike \(an AEC env\)",
        ),
        (
            "envs_fakes:continuous_env",
            {},
            UnsupportedEnvError,
            r"continuous action space Box.*continuous_actions",
        ),
        (
            "envs_fakes:multidiscrete_env",
            {},
            UnsupportedEnvError,
            r"found action space MultiDiscrete",
        ),
        (
            "envs_fakes:image_env",
            {},
            UnsupportedEnvError,
            r"non-flat observation of shape \(4, 4\)",
        ),
        (
            "envs_fakes:unlimited_env",
            {},
            EnvError,
            r"declares no episode length .* pass episode_limit=",
        ),
        (
            "mpe2:simple_spread_v3",
            {"env_kwargs": {"continuous_actions": True}},
            UnsupportedEnvError,
            r"continuous action space",
        ),
        ("simple_spread", {"env_kwargs": {"bogus": 1}}, EnvError, r"rejected env_kwargs"),
        ("two_step", {"env_kwargs": {"x": 1}}, EnvError, r"'two_step' takes no env_kwargs"),
        (
            "simple_spread",
            {"team_reward": "max"},
            EnvError,
            r"team_reward must be one of \('sum', 'mean'\); found 'max'",
        ),
        (
            "simple_spread",
            {"n_agents": 0},
            EnvError,
            r"n_agents must be a positive integer; found 0",
        ),
        (
            "simple_spread",
            {"episode_limit": 0},
            EnvError,
            r"episode_limit must be a positive number",
        ),
        ("", {}, EnvError, r"expected an env id string"),
        ("CartPole-v1", {"env_kwargs": {"nope": 1}}, EnvError, r"rejected env_kwargs"),
        ("gymnasium:NoSuchGame-v0", {}, EnvError, r"read as Gymnasium's 'module:EnvId' form"),
        (
            "Pendulum-v1",
            {},
            UnsupportedEnvError,
            r"continuous action space .* supported: Discrete actions",
        ),
        ("Blackjack-v1", {}, UnsupportedEnvError, r"observation space Tuple"),
    ],
)
def test_envs_error_paths(env_id: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make_env(env_id, **kwargs)


@pytest.mark.parametrize(
    ("env_id", "suggestion"),
    [
        ("mpe2:simple_sprd_v3", "'simple_spread_v3'"),  # a package's env submodule
        ("qmix_edge.envs.toy:MaskedChoic", "'MaskedChoiceEnv'"),  # a module's factory
        ("simple_sprad", "'simple_spread'"),  # a built-in name
        ("CartPol-v1", "'CartPole-v1'"),  # a Gymnasium id
    ],
)
def test_envs_unknown_names_suggest_the_closest(env_id: str, suggestion: str) -> None:
    with pytest.raises(EnvError, match=f"Did you mean {suggestion}"):
        make_env(env_id)


def test_envs_unknown_attribute_lists_the_env_modules_not_the_package_internals() -> None:
    with pytest.raises(EnvError) as info:
        make_env("mpe2:simple_sprd_v3")
    listed = str(info.value).split("Its env modules and factories: ")[1].split(", ")
    assert {"simple_spread_v3", "simple_speaker_listener_v4", "simple_tag_v3"} <= set(listed)
    assert not {"sys", "notifications", "all_modules"} & set(listed)


def test_envs_unlimited_env_works_with_episode_limit() -> None:
    env = make_env("envs_fakes:unlimited_env", episode_limit=3)
    env.reset()
    flags = [env.step(np.zeros(2, np.int64)) for _ in range(3)]
    assert [(r.terminated, r.truncated) for r in flags] == [(False, False)] * 2 + [(False, True)]


@pytest.mark.parametrize(
    ("env_id", "blocked", "match"),
    [
        ("simple_spread", "mpe2", r"needs 'mpe2'.*pip install 'qmix-edge\[sim\]'"),
        ("masked_choice", "pettingzoo", r"needs 'pettingzoo'.*pip install 'qmix-edge\[sim\]'"),
        (
            "CartPole-v1",
            "gymnasium",
            r"Gymnasium ids \(gymnasium unavailable: pip install 'qmix-edge\[sim\]'\)",
        ),
    ],
)
def test_envs_missing_sim_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, env_id: str, blocked: str, match: str
) -> None:
    real = registry_module.importlib.import_module

    def fake_import(name: str, *a, **k):
        # as if `blocked` were not installed: importing it, or a module that needs it, fails
        if name.split(".")[0] == blocked or (blocked == "pettingzoo" and name.endswith(".toy")):
            raise ModuleNotFoundError(f"No module named '{blocked}'", name=blocked)
        return real(name, *a, **k)

    monkeypatch.setattr(registry_module.importlib, "import_module", fake_import)
    with pytest.raises(EnvError, match=match):
        make_env(env_id)


def test_envs_builtin_table_is_visible() -> None:
    assert BUILTIN_ENVS["simple_spread"].target == "mpe2:simple_spread_v3"
    assert BUILTIN_ENVS["simple_speaker_listener"].target == "mpe2:simple_speaker_listener_v4"
    assert {"two_step", "penalty", "masked_choice", "leaving_agents", "speaker_pair"} <= set(
        BUILTIN_ENVS
    )


def test_envs_check_actions_rejects_bad_joint_actions() -> None:
    env = make_env("simple_spread")
    ts = env.reset(seed=0)
    with pytest.raises(EnvError, match=r"action -1 is not available to agent 'agent_0'"):
        env.check_actions(np.array([-1, 0, 0]), ts)
    with pytest.raises(EnvError, match=r"action 5 is not available to agent 'agent_1'"):
        env.check_actions(np.array([0, 5, 0]), ts)
    with pytest.raises(
        EnvError, match=r"expected one action per agent, shape \(3,\); found shape \(2,\)"
    ):
        env.check_actions(np.array([0, 0]), ts)
    with pytest.raises(EnvError, match="expected integer actions; found dtype float64"):
        env.check_actions(np.array([0.0, 1.0, 2.0]), ts)
