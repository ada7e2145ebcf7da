"""Fixtures of the end-to-end runtime tests: real artifacts exported from tiny untrained networks.

The weights are random (seeded): what these tests prove is faithful decentralised execution, not
learning, so any network will do as long as it really goes through the exporter.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def export_tiny(
    env_id: str,
    out: Path,
    *,
    n_agents: int = 2,
    episode_limit: int | None = None,
    kind: str = "mlp",
    use_prev_action: bool = False,
    seed: int = 0,
) -> Path:
    import torch

    from qmix_edge.envs import make_env
    from qmix_edge.export import export_agent_networks
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    env = make_env(env_id, n_agents=n_agents, episode_limit=episode_limit)
    net = AgentNetwork(env.spec, kind=kind, hidden_dim=16, use_prev_action=use_prev_action)  # type: ignore[arg-type]
    export_agent_networks(
        net,
        env.spec,
        out,
        run_id=f"test-{env_id}-{seed}",
        env=env,
        env_options={"n_agents": n_agents, "episode_limit": episode_limit},
        synthetic_episodes=2,
        env_episodes=1,
    )
    env.close()
    return out


@pytest.fixture(scope="session")
def two_step_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny("two_step", tmp_path_factory.mktemp("art") / "two_step")


@pytest.fixture(scope="session")
def spread_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple_spread with 3 agents, 10-step episodes, a GRU agent with last-action input."""
    return export_tiny(
        "simple_spread",
        tmp_path_factory.mktemp("art") / "spread",
        n_agents=3,
        episode_limit=10,
        kind="gru",
        use_prev_action=True,
    )


@pytest.fixture(scope="session")
def masked_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two agents with 4 actions and fallback action 0, on masked_choice (random masks) and on
    masked_noop (action 0, the fallback, masked on a schedule)."""
    root = tmp_path_factory.mktemp("art")
    return {env: export_tiny(env, root / env) for env in ("masked_choice", "masked_noop")}
