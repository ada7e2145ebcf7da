"""The parity gate's own logic: what it accepts, what it refuses, what it counts as a near-tie."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qmix_edge.envs import EnvSpec
from qmix_edge.export import ExportError, ParityError
from qmix_edge.export.graph import AgentGraph, export_graph
from qmix_edge.export.parity import Recording, check_parity, record_synthetic
from qmix_edge.train.networks import AgentNetwork


@pytest.fixture
def setup(hetero_spec: EnvSpec) -> tuple[AgentNetwork, Recording, bytes]:
    torch.manual_seed(1)
    net = AgentNetwork(hetero_spec, "gru", hidden_dim=16, use_prev_action=True)
    rec = record_synthetic(net, hetero_spec, n_episodes=4, episode_len=6, seed=3)
    model = export_graph(AgentGraph(net, hetero_spec, 1)).SerializeToString()
    return net, rec, model


def test_recording_covers_resets_masks_and_previous_actions(
    setup: tuple[AgentNetwork, Recording, bytes], hetero_spec: EnvSpec
) -> None:
    _, rec, _ = setup
    assert rec.n_steps == 24 and rec.n_episodes == 4
    assert (rec.prev_action[rec.start] == -1).all()
    assert (rec.prev_action[~rec.start] >= 0).all()
    for i, agent in enumerate(hetero_spec.agents):
        own = rec.mask[:, i, : agent.n_actions]
        assert own.any(axis=1).all()  # at least one allowed action at every step
        assert not own.all()  # and some steps really are masked
        assert not rec.mask[:, i, agent.n_actions :].any()
    assert (rec.h_in[rec.start] == 0).all() and (rec.h_in[~rec.start] != 0).any()


def test_gate_passes_and_reports(
    setup: tuple[AgentNetwork, Recording, bytes], hetero_spec: EnvSpec
) -> None:
    net, rec, model = setup
    figures, replay = check_parity(model, rec, 1, hetero_spec, net)
    assert figures.n_steps == 24 and figures.n_episodes == 4
    assert figures.near_ties == 0 and figures.max_abs_q_diff <= 1e-5
    assert replay.q.shape == (24, hetero_spec.agents[1].n_actions)


def _with_greedy_changed(rec: Recording, index: int) -> tuple[Recording, int]:
    """Pretend torch chose another allowed action at some step; return (recording, step)."""
    greedy = rec.greedy.copy()
    for t in range(rec.n_steps):
        allowed = np.flatnonzero(rec.mask[t, index])
        others = [a for a in allowed if a != greedy[t, index]]
        if others:
            greedy[t, index] = others[0]
            return dataclasses.replace(rec, greedy=greedy), t
    raise AssertionError("no step with two allowed actions")


def test_gate_refuses_a_different_action_and_counts_near_ties(
    setup: tuple[AgentNetwork, Recording, bytes], hetero_spec: EnvSpec
) -> None:
    net, rec, model = setup
    changed, _ = _with_greedy_changed(rec, 1)
    with pytest.raises(ParityError, match="greedy actions differ at 1 steps beyond near-ties"):
        check_parity(model, changed, 1, hetero_spec, net)
    figures, _ = check_parity(model, changed, 1, hetero_spec, net, tie_tol=1e9)
    assert figures.near_ties == 1


def test_gate_refuses_q_drift(
    setup: tuple[AgentNetwork, Recording, bytes], hetero_spec: EnvSpec
) -> None:
    net, rec, model = setup
    q = rec.q.copy()
    q[5, 1, 0] += 1e-4
    with pytest.raises(ParityError, match=r"Q-values differ by 0\.0001 > 1\.\d+e-05 .*step 5"):
        check_parity(model, dataclasses.replace(rec, q=q), 1, hetero_spec, net)
    assert issubclass(ParityError, ExportError)


def test_tolerance_scales_with_large_q_values(hetero_spec: EnvSpec) -> None:
    """Returns in the hundreds: float32 resolution there is ~1e-5, so the gate adds ~8 ulps."""
    torch.manual_seed(2)
    net = AgentNetwork(hetero_spec, "mlp", hidden_dim=16)
    with torch.no_grad():
        net.out.bias.add_(-300.0)  # Q-values around -300
    rec = record_synthetic(net, hetero_spec, n_episodes=2, episode_len=5, seed=0)
    model = export_graph(AgentGraph(net, hetero_spec, 0)).SerializeToString()
    figures, _ = check_parity(model, rec, 0, hetero_spec, net)
    assert figures.q_rtol == 1e-6
    q = rec.q.copy()
    q[2, 0, 0] += 2e-4  # within 1e-5 + 1e-6 x 300, beyond 1e-5 alone
    check_parity(model, dataclasses.replace(rec, q=q), 0, hetero_spec, net)
    with pytest.raises(ParityError, match="Q-values differ"):
        check_parity(model, dataclasses.replace(rec, q=q), 0, hetero_spec, net, q_rtol=0.0)
    q[2, 0, 0] += 1e-3  # beyond both
    with pytest.raises(ParityError, match="Q-values differ"):
        check_parity(model, dataclasses.replace(rec, q=q), 0, hetero_spec, net)


def test_graph_refuses_a_mismatched_spec(hetero_spec: EnvSpec) -> None:
    other = dataclasses.replace(hetero_spec, agents=hetero_spec.agents[:2])
    net = AgentNetwork(other, "mlp", hidden_dim=8)
    with pytest.raises(ExportError, match="does not match the agent network"):
        AgentGraph(net, hetero_spec, 0)
