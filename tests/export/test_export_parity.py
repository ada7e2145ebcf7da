"""torch vs onnxruntime parity of exported agents: both network kinds, sharing on/off, last action.

The exporter's own gate must pass and report its figures; independently of it, the device runtime
(`AgentPolicy`, carrying hidden state and previous action itself) must reproduce the training
network's team forward pass over whole greedy episodes with resets and random masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qmix_edge.envs import EnvSpec, make_env
from qmix_edge.export import export_agent_networks
from qmix_edge.export.parity import Q_ATOL, masked_argmax
from qmix_edge.runtime.artifact import Manifest
from qmix_edge.runtime.policy import AgentPolicy
from qmix_edge.runtime.tensors import MANIFEST_FILE
from qmix_edge.train.networks import AgentNetwork


def _policy_vs_torch(
    net: AgentNetwork,
    spec: EnvSpec,
    root: Path,
    *,
    episodes: int = 4,
    steps: int = 9,
    seed: int = 7,
) -> tuple[float, int]:
    """Greedy team episodes: runtime policies vs the torch team network. (max |dQ|, mismatches)."""
    rng = np.random.default_rng(seed)
    policies = [AgentPolicy.load(root, a.agent_id) for a in spec.agents]
    n, d, a_max = spec.n_agents, spec.max_obs_dim, spec.max_n_actions
    worst, mismatches = 0.0, 0
    for _ in range(episodes):
        for p in policies:
            p.reset()
        h = net.initial_hidden(1)
        prev = torch.full((1, n), -1, dtype=torch.int64)
        for _t in range(steps):
            obs = np.zeros((n, d), dtype=np.float32)
            mask = np.zeros((n, a_max), dtype=bool)
            for i, ag in enumerate(spec.agents):
                obs[i, : ag.obs_dim] = rng.normal(0, 2, ag.obs_dim)
                mask[i, : ag.n_actions] = rng.random(ag.n_actions) < 0.6
                mask[i, rng.integers(ag.n_actions)] = True
            with torch.no_grad():
                q, h_next = net(
                    torch.from_numpy(obs)[None],
                    prev if net.use_prev_action else None,
                    h if net.recurrent else None,
                )
            if h_next is not None:
                h = h_next
            greedy = masked_argmax(q[0].numpy(), mask)
            for i, (ag, p) in enumerate(zip(spec.agents, policies, strict=True)):
                res = p.act(obs[i, : ag.obs_dim], mask[i, : ag.n_actions])
                worst = max(
                    worst, float(np.abs(res.q_values - q[0, i, : ag.n_actions].numpy()).max())
                )
                mismatches += int(res.action != greedy[i])
            prev = torch.from_numpy(greedy)[None]
    return worst, mismatches


@pytest.mark.parametrize("kind", ["mlp", "gru"])
@pytest.mark.parametrize("share_params", [True, False])
@pytest.mark.parametrize("use_prev_action", [True, False])
def test_export_matches_torch(
    tmp_path: Path, hetero_spec: EnvSpec, kind: str, share_params: bool, use_prev_action: bool
) -> None:
    torch.manual_seed(11)
    net = AgentNetwork(
        hetero_spec, kind, hidden_dim=32, share_params=share_params, use_prev_action=use_prev_action
    )  # type: ignore[arg-type]
    out = tmp_path / "art"
    manifest = export_agent_networks(net, hetero_spec, out, run_id="t", step=5)

    on_disk = json.loads((out / MANIFEST_FILE).read_text())
    assert Manifest.from_dict(on_disk) == manifest
    for agent, entry in zip(hetero_spec.agents, manifest.agents, strict=True):
        assert (entry.obs_dim, entry.n_actions) == (agent.obs_dim, agent.n_actions)
        assert entry.recurrent is (kind == "gru")
        assert entry.uses_prev_action is use_prev_action
        assert entry.parity.max_abs_q_diff <= Q_ATOL
        assert entry.parity.n_steps >= 60 and entry.parity.n_episodes >= 5
        assert (out / entry.file).stat().st_size == entry.size_bytes

    worst, mismatches = _policy_vs_torch(net, hetero_spec, out)
    assert worst <= Q_ATOL
    assert mismatches == 0


@pytest.mark.parametrize(
    "env_id", ["simple_speaker_listener", "masked_choice", "leaving_agents", "two_step"]
)
def test_parity_on_real_env_observations(tmp_path: Path, env_id: str) -> None:
    """Real environments (heterogeneous MPE, action masks, agents leaving) feed the recording."""
    env = make_env(env_id, n_agents=2)
    torch.manual_seed(2)
    net = AgentNetwork(env.spec, "gru", hidden_dim=16, share_params=False, use_prev_action=True)
    manifest = export_agent_networks(net, env.spec, tmp_path / "art", env=env)
    env.close()
    for agent, entry in zip(env.spec.agents, manifest.agents, strict=True):
        assert entry.parity.sources == ("env", "synthetic")
        assert entry.parity.max_abs_q_diff <= Q_ATOL
        assert (entry.obs_dim, entry.n_actions) == (agent.obs_dim, agent.n_actions)


def test_masked_argmax_breaks_ties_to_lowest_allowed_index(
    tmp_path: Path, hetero_spec: EnvSpec
) -> None:
    torch.manual_seed(0)
    net = AgentNetwork(hetero_spec, "mlp", hidden_dim=8)
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.fill_(0.5)  # every action has the same Q
    export_agent_networks(net, hetero_spec, tmp_path / "art")
    policy = AgentPolicy.load(tmp_path / "art", "carrier")
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(5) < 0.5
        mask[rng.integers(5)] = True
        res = policy.act(rng.normal(size=8).astype(np.float32), mask)
        assert res.action == int(np.flatnonzero(mask)[0])
        assert np.all(res.q_values == np.float32(0.5))


def test_masked_out_actions_are_never_chosen(tmp_path: Path, hetero_spec: EnvSpec) -> None:
    torch.manual_seed(4)
    net = AgentNetwork(hetero_spec, "gru", hidden_dim=16)
    export_agent_networks(net, hetero_spec, tmp_path / "art")
    policy = AgentPolicy.load(tmp_path / "art", "carrier")
    rng = np.random.default_rng(1)
    for _ in range(50):
        mask = np.zeros(5, dtype=bool)
        mask[rng.integers(5)] = True
        res = policy.act(rng.normal(size=8).astype(np.float32), mask)
        assert mask[res.action]
