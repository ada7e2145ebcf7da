"""Agent networks and mixers: QMIX monotonicity, GRU equivalence, per-agent weights."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.train.config import TrainConfig
from qmix_edge.train.errors import ConfigError
from qmix_edge.train.mixers import QMixer, VDNMixer
from qmix_edge.train.networks import AgentNetwork, GroupedLinear
from qmix_edge.train.registry import MIXERS, lookup


def _spec(n_agents: int = 3, obs_dim: int = 5, n_actions: int = 4) -> EnvSpec:
    agents = tuple(AgentSpec(f"agent_{i}", obs_dim, n_actions) for i in range(n_agents))
    return EnvSpec("test", agents, state_dim=7, episode_limit=10)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_agents=st.integers(1, 5),
    layers=st.sampled_from([1, 2]),
    batch=st.integers(1, 6),
    scale=st.floats(0.1, 100.0),
)
def test_qmix_is_monotonic_in_every_agent_utility(
    seed: int, n_agents: int, layers: int, batch: int, scale: float
) -> None:
    torch.manual_seed(seed)
    mixer = QMixer(n_agents, state_dim=6, embed_dim=8, hypernet_layers=layers, hypernet_embed=16)  # type: ignore[arg-type]
    qs = (torch.randn(batch, n_agents) * scale).requires_grad_(True)
    states = torch.randn(batch, 6) * scale
    q_tot = mixer(qs, states)  # (batch,)
    (grad,) = torch.autograd.grad(q_tot.sum(), qs)
    assert grad.shape == (batch, n_agents)
    assert (grad >= 0).all(), grad


def test_mixer_shapes_and_registry() -> None:
    qs = torch.randn(4, 5, 3)  # (B, T, n)
    states = torch.randn(4, 5, 7)
    spec = _spec(n_agents=3)
    config = TrainConfig(mixing_embed_dim=8, hypernet_layers=2)
    qmix = MIXERS["qmix"].build(config, spec)
    assert isinstance(qmix, QMixer) and qmix(qs, states).shape == (4, 5)
    vdn = MIXERS["vdn"].build(config, spec)
    assert isinstance(vdn, VDNMixer)
    torch.testing.assert_close(vdn(qs), qs.sum(-1))
    assert MIXERS["none"].build(config, spec) is None
    with pytest.raises(ConfigError, match=r"unknown mixer 'vdm'; .* Did you mean 'vdn'\?"):
        lookup(MIXERS, "vdm", "mixer")
    with pytest.raises(ValueError, match="hypernet_layers must be 1 or 2"):
        QMixer(3, 7, hypernet_layers=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [True, False])
def test_gru_agent_matches_torch_grucell(share: bool) -> None:
    torch.manual_seed(0)
    spec = _spec()
    net = AgentNetwork(spec, kind="gru", hidden_dim=8, share_params=share, use_agent_id=True)
    obs = torch.randn(6, 2, 3, 5)  # (T, B, n, obs)
    h = net.initial_hidden(2)
    hs = []
    for t in range(obs.shape[0]):
        _, h = net(obs[t], None, h)
        hs.append(h)
    for i in range(3):
        cell = torch.nn.GRUCell(8, 8)
        w_ih, b_ih = net.gru_ih.for_agent(i)
        w_hh, b_hh = net.gru_hh.for_agent(i)
        with torch.no_grad():
            cell.weight_ih.copy_(w_ih.t())
            cell.bias_ih.copy_(b_ih)
            cell.weight_hh.copy_(w_hh.t())
            cell.bias_hh.copy_(b_hh)
        w1, b1 = net.fc1.for_agent(i)
        ref_h = torch.zeros(2, 8)
        for t in range(obs.shape[0]):
            x = torch.relu(net.build_inputs(obs[t], None)[:, i] @ w1 + b1)
            ref_h = cell(x, ref_h)
            torch.testing.assert_close(hs[t][:, i], ref_h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("kind", ["gru", "mlp"])
def test_unroll_equals_stepping_with_the_hidden_state_carried(kind: str, share: bool) -> None:
    torch.manual_seed(0)
    net = AgentNetwork(_spec(), kind=kind, hidden_dim=8, share_params=share, use_prev_action=True)
    obs = torch.randn(2, 7, 3, 5)  # (B, T, n, obs)
    prev = torch.randint(-1, 4, (2, 7, 3))
    q_seq = net.unroll(obs, prev)  # (B, T, n, A)
    h = None
    for t in range(obs.shape[1]):
        q, h = net(obs[:, t], prev[:, t], h)
        torch.testing.assert_close(q_seq[:, t], q, rtol=1e-5, atol=1e-6)
    (q_seq**2).sum().backward()  # and the gradient reaches the network's own weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_grouped_linear_per_agent_equals_separate_layers() -> None:
    torch.manual_seed(1)
    layer = GroupedLinear(3, 4, 5)
    x = torch.randn(7, 3, 4)
    y = layer(x)
    for i in range(3):
        w, b = layer.for_agent(i)
        torch.testing.assert_close(y[:, i], x[:, i] @ w + b)
    shared = GroupedLinear(1, 4, 5)
    w, b = shared.for_agent(2)
    torch.testing.assert_close(shared(x), x @ w + b)


def test_agent_network_inputs_and_masks_of_prev_action() -> None:
    spec = _spec(n_agents=2, obs_dim=3, n_actions=4)
    net = AgentNetwork(spec, kind="mlp", hidden_dim=8, use_prev_action=True, use_agent_id=True)
    assert net.input_dim == 3 + 4 + 2
    obs = torch.zeros(1, 2, 3)
    inputs = net.build_inputs(obs, torch.tensor([[-1, 2]]))
    assert inputs[0, 0, 3:7].tolist() == [0, 0, 0, 0]  # no previous action at t = 0
    assert inputs[0, 1, 3:7].tolist() == [0, 0, 1, 0]
    assert inputs[0, :, 7:].tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="use_prev_action"):
        net(obs)
    with pytest.raises(ValueError, match=r"one of \['mlp', 'gru'\]; found 'lstm'"):
        AgentNetwork(spec, kind="lstm")  # type: ignore[arg-type]
