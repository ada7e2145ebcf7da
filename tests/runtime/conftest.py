"""Fixtures of the runtime tests: an in-process coordinator on port 0 (see runtime_doubles)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from runtime_doubles import Harness, two_step_team

from qmix_edge.envs import TwoStepGame
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig


@pytest.fixture
def make_harness(tmp_path: Any) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(env: Any = None, record: bool = True, **config: Any) -> Harness:
        cfg = CoordinatorConfig(**{"team_wait_s": 10.0, **config})
        record_path = tmp_path / f"records{len(made)}.jsonl" if record else None
        h = Harness(
            Coordinator(
                two_step_team(),
                cfg,
                env=env
                if env is not None
                else (TwoStepGame() if cfg.mode == "simulation" else None),
                record_path=record_path,
            ),
            record_path,
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.coordinator.close(grace_s=0.5)


@pytest.fixture(scope="session")
def rollout_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Artifact sets of one 2-agent team for rollout tests: two signed exports ("v1", "v2"), an
    unsigned one ("unsigned"), and the signing key pair ("pub", "priv"). Built with the exporter
    (torch, in the test process)."""
    torch = pytest.importorskip("torch")
    from qmix_edge.envs import AgentSpec, EnvSpec
    from qmix_edge.export import export_agent_networks, generate_keypair
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    spec = EnvSpec(
        env_id="rollout_test",
        agents=(AgentSpec("agent_0", 5, 3), AgentSpec("agent_1", 5, 3)),
        state_dim=10,
        episode_limit=6,
    )
    base = tmp_path_factory.mktemp("rollout")
    priv, pub = generate_keypair(base / "keys")
    out: dict[str, Any] = {"pub": pub, "priv": priv}
    for seed, name, key in ((1, "v1", priv), (2, "v2", priv), (3, "unsigned", None)):
        torch.manual_seed(seed)
        net = AgentNetwork(spec, "mlp", hidden_dim=8, share_params=True, use_prev_action=False)
        export_agent_networks(net, spec, base / name, sign_key=key)
        out[name] = base / name
    return out
