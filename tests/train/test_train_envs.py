"""Training runs on every kind of environment, and refuses the ones it cannot train, clearly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_helpers import tiny

from qmix_edge.envs import EnvError, UnsupportedEnvError
from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.trainer import Trainer


@pytest.mark.parametrize("env", ["simple_speaker_listener", "speaker_pair"])
def test_heterogeneous_agents_train(env: str, tmp_path: Path) -> None:
    trainer = Trainer("qmix", env=env, seed=0, config=tiny(), run_dir=tmp_path / "r")
    assert trainer.spec.heterogeneous
    result = trainer.train(total_timesteps=600)
    assert np.isfinite(result["mean_reward"]) and result["updates"] > 0
    run = load_run(tmp_path / "r")
    assert run.spec.agents == trainer.spec.agents  # each agent keeps its own obs size and actions


def test_a_fixed_team_records_its_real_size_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """speaker_pair is a team of 2 whatever n_agents asks: the run says 2, and the registry's
    note that n_agents does not apply comes once, not once per env made."""
    caplog.set_level(logging.INFO, logger="qmix_edge.envs.registry")
    trainer = Trainer("qmix", env="speaker_pair", seed=0, config=tiny(n_agents=3), run_dir=tmp_path)
    trainer.train(total_timesteps=200)
    assert trainer.config.n_agents == 2
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["n_agents"] == 2
    notes = [r for r in caplog.records if r.name == "qmix_edge.envs.registry"]
    assert len(notes) == 1


@pytest.mark.parametrize("algo", ["qmix", "iql"])
def test_agents_leaving_early_train(algo: str, tmp_path: Path) -> None:
    trainer = Trainer(algo, env="leaving_agents", seed=0, config=tiny(), run_dir=tmp_path / "r")
    result = trainer.train(total_timesteps=600)
    assert np.isfinite(result["mean_reward"]) and result["updates"] > 0
    d, n = trainer.replay.data, trainer.replay.size
    filled = d.filled[:n]
    alive = d.alive[:n, :-1]
    assert (~alive[filled]).any(), "some agent should have left during some step"
    # An absent agent only ever 'takes' the placeholder action 0.
    assert (d.actions[:n][filled][~alive[filled]] == 0).all()


@pytest.mark.parametrize("agent_network", ["mlp", "gru"])
def test_cartpole_team_quick_start(agent_network: str, tmp_path: Path) -> None:
    trainer = Trainer(
        "qmix",
        env="CartPole-v1",
        seed=42,
        config={
            "n_agents": 3,
            "hidden_dim": 64,
            "mixing_embed_dim": 32,
            "agent_network": agent_network,
            "n_envs": 2,
            "vector": "sync",
            "eval_episodes": 2,
        },
        run_dir=tmp_path / "r",
    )
    assert trainer.spec.n_agents == 3
    result = trainer.train(total_timesteps=1000)
    assert result["mean_reward"] > 0  # CartPole pays 1 per step per copy
    assert result["env_steps"] == 1000


def test_unknown_env_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="unknown env id 'no_such_env'"):
        Trainer("qmix", env="no_such_env", run_dir=tmp_path / "r")


def test_continuous_actions_are_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedEnvError, match=r"(?i)continuous|discrete"):
        Trainer(
            "qmix",
            env="simple_spread",
            config={"env_kwargs": {"continuous_actions": True}},
            run_dir=tmp_path / "r",
        )
