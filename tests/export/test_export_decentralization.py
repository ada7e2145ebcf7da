"""Decentralised execution is faithful: each agent's own greedy ONNX action = the team's best joint action.

QMIX's mixing weights are non-negative (|.| on the hypernetwork outputs) and ELU is increasing, so
Q_tot is monotonic in every Q_i: the argmax of Q_tot over all joint (allowed) actions is the tuple of
per-agent argmaxes. The test enumerates every joint action through the *mixer* and compares with the
agents' independent decisions from their exported graphs, for random and trained weights. A negative
control (a mixer with a negative weight) shows the check can fail.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.export import export_agent_networks
from qmix_edge.runtime.tensors import TensorNames
from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.mixers import QMixer
from qmix_edge.train.networks import AgentNetwork


def _graph_actions(
    root: Path, spec: EnvSpec, obs: np.ndarray, mask: np.ndarray, uses_prev: bool
) -> np.ndarray:
    """Each agent's action from its own ONNX graph and its own inputs only (t=0: prev -1, h 0)."""
    actions = []
    for i, agent in enumerate(spec.agents):
        sess = ort.InferenceSession(str(root / f"{agent.agent_id}.onnx"))
        feed = {
            TensorNames.OBS: obs[i, : agent.obs_dim][None],
            TensorNames.ACTION_MASK: mask[i, : agent.n_actions][None],
        }
        names = {x.name for x in sess.get_inputs()}
        if uses_prev:
            feed[TensorNames.PREV_ACTION] = np.array([-1], dtype=np.int64)
        if TensorNames.H_IN in names:
            feed[TensorNames.H_IN] = np.zeros((1, sess.get_inputs()[-1].shape[1]), np.float32)
        actions.append(int(sess.run([TensorNames.ACTION], feed)[0][0]))
    return np.array(actions)


def _best_joint_action(
    net: AgentNetwork,
    mixer: torch.nn.Module,
    spec: EnvSpec,
    obs: np.ndarray,
    state: np.ndarray,
    mask: np.ndarray,
) -> tuple[np.ndarray, float]:
    """argmax over every allowed joint action of the mixer's Q_tot, and the gap to the runner-up."""
    n = spec.n_agents
    with torch.no_grad():
        prev = torch.full((1, n), -1, dtype=torch.int64) if net.use_prev_action else None
        q, _ = net(torch.from_numpy(obs)[None], prev)  # (1, n, A)
        joint = list(
            itertools.product(
                *(np.flatnonzero(mask[i, : a.n_actions]) for i, a in enumerate(spec.agents))
            )
        )
        idx = torch.tensor(joint, dtype=torch.int64)  # (J, n)
        agent_qs = q[0].gather(1, idx.T).T  # (J, n): Q_i(a_i) of each joint action
        states = torch.from_numpy(state)[None].expand(len(joint), -1)  # (J, state_dim)
        q_tot = mixer(agent_qs, states)  # (J,)
    order = torch.argsort(q_tot, descending=True)
    gap = float(q_tot[order[0]] - q_tot[order[1]]) if len(joint) > 1 else float("inf")
    return np.array(joint[int(order[0])]), gap


def _random_case(
    spec: EnvSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = np.zeros((spec.n_agents, spec.max_obs_dim), dtype=np.float32)
    mask = np.zeros((spec.n_agents, spec.max_n_actions), dtype=bool)
    for i, a in enumerate(spec.agents):
        obs[i, : a.obs_dim] = rng.normal(0, 1.5, a.obs_dim)
        mask[i, : a.n_actions] = rng.random(a.n_actions) < 0.7
        mask[i, rng.integers(a.n_actions)] = True
    state = rng.normal(0, 1.5, spec.state_dim).astype(np.float32)
    return obs, mask, state


@pytest.fixture
def team_spec() -> EnvSpec:
    return EnvSpec(
        env_id="joint_test",
        agents=(AgentSpec("a", 4, 3), AgentSpec("b", 6, 4), AgentSpec("c", 2, 3)),
        state_dim=7,
        episode_limit=5,
    )


@pytest.mark.parametrize("hypernet_layers", [1, 2])
def test_independent_greedy_actions_maximise_q_tot(
    tmp_path: Path, team_spec: EnvSpec, hypernet_layers: int
) -> None:
    torch.manual_seed(hypernet_layers)
    net = AgentNetwork(team_spec, "mlp", hidden_dim=16, share_params=False)
    mixer = QMixer(
        team_spec.n_agents, team_spec.state_dim, embed_dim=8, hypernet_layers=hypernet_layers
    )  # type: ignore[arg-type]
    export_agent_networks(net, team_spec, tmp_path / "art")
    rng = np.random.default_rng(hypernet_layers)
    checked = 0
    for _ in range(60):
        obs, mask, state = _random_case(team_spec, rng)
        best, gap = _best_joint_action(net, mixer, team_spec, obs, state, mask)
        if gap < 1e-6:  # a genuine tie in Q_tot: either answer is optimal
            continue
        assert np.array_equal(_graph_actions(tmp_path / "art", team_spec, obs, mask, False), best)
        checked += 1
    assert checked >= 50


def test_trained_run_decentralises_faithfully(trained_run: Path, tmp_path: Path) -> None:
    """The trained two-step run: every state of the game, every mask with an allowed action."""
    run = load_run(trained_run)
    assert isinstance(run.mixer, QMixer)
    export_agent_networks(run.agent_net, run.spec, tmp_path / "art")
    spec = run.spec
    checked = 0
    for s in range(3):  # states 1, 2A, 2B as one-hot observations (and global state)
        onehot = np.eye(3, dtype=np.float32)[s]
        obs = np.tile(onehot, (2, 1))
        for bits in itertools.product([True, False], repeat=4):
            mask = np.array(bits, dtype=bool).reshape(2, 2)
            if not mask.any(axis=1).all():
                continue
            best, gap = _best_joint_action(run.agent_net, run.mixer, spec, obs, onehot, mask)
            if gap < 1e-6:
                continue
            got = _graph_actions(tmp_path / "art", spec, obs, mask, run.agent_net.use_prev_action)
            assert np.array_equal(got, best), (s, bits)
            checked += 1
    assert checked >= 10


class _SignFlippedMixer(torch.nn.Module):
    """Negative control: a mixer whose first agent enters with a negative weight (not monotonic)."""

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        del states
        return -agent_qs[..., 0] + agent_qs[..., 1:].sum(-1)


def test_the_check_catches_a_non_monotonic_mixer(tmp_path: Path, team_spec: EnvSpec) -> None:
    torch.manual_seed(0)
    net = AgentNetwork(team_spec, "mlp", hidden_dim=16, share_params=False)
    export_agent_networks(net, team_spec, tmp_path / "art")
    rng = np.random.default_rng(0)
    disagreements = 0
    for _ in range(20):
        obs, mask, state = _random_case(team_spec, rng)
        best, _ = _best_joint_action(net, _SignFlippedMixer(), team_spec, obs, state, mask)
        got = _graph_actions(tmp_path / "art", team_spec, obs, mask, False)
        disagreements += int(not np.array_equal(got, best))
    assert disagreements > 0
