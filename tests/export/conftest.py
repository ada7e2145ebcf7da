"""Shared fixtures of the export tests: small specs, networks and a briefly trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qmix_edge.envs import AgentSpec, EnvSpec


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def hetero_spec() -> EnvSpec:
    """Three agents with different observation sizes and action counts."""
    return EnvSpec(
        env_id="hetero_test",
        agents=(AgentSpec("scout", 5, 3), AgentSpec("carrier", 8, 5), AgentSpec("relay", 3, 2)),
        state_dim=6,
        episode_limit=10,
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real qmix-train run on the two-step game (GRU, last-action input), a few hundred steps."""
    from qmix_edge import Trainer

    run_dir = tmp_path_factory.mktemp("runs") / "two_step"
    torch.set_num_threads(1)
    trainer = Trainer(
        "qmix",
        env="two_step",
        seed=3,
        config={"hidden_dim": 16, "agent_network": "gru", "use_prev_action": True},
        run_dir=run_dir,
    )
    trainer.train(total_timesteps=300)
    return run_dir
