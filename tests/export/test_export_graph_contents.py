"""What is (and is not) inside an exported graph: own weights only, no mixer, local inputs, the rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.export import OPSET, export_agent_networks, export_run
from qmix_edge.export.graph import MAX_IR_VERSION
from qmix_edge.runtime.artifact import (
    METADATA_AGENT_KEY,
    METADATA_MANIFEST_KEY,
    METADATA_PRECISION_KEY,
)
from qmix_edge.runtime.tensors import TensorNames
from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.networks import AgentNetwork


def _spec() -> EnvSpec:
    return EnvSpec(
        env_id="hetero_test",
        agents=(AgentSpec("scout", 5, 3), AgentSpec("carrier", 8, 5), AgentSpec("relay", 3, 2)),
        state_dim=6,
        episode_limit=10,
    )


def _initializers(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:  # constants folded into nodes count too
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                arrays.append(numpy_helper.to_array(attr.t))
    return arrays


def _contains(arrays: list[np.ndarray], target: np.ndarray) -> bool:
    """``target`` (or its transpose) appears among ``arrays`` as an exact block of values."""
    flat = target.astype(np.float32).ravel()
    for a in arrays:
        if a.size == flat.size and (
            np.array_equal(a.ravel(), flat) or np.array_equal(a.T.ravel(), flat)
        ):
            return True
    return False


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[AgentNetwork, Path]:
    hetero_spec = _spec()
    torch.manual_seed(5)
    net = AgentNetwork(hetero_spec, "gru", hidden_dim=16, share_params=False, use_prev_action=True)
    out = tmp_path_factory.mktemp("contents") / "art"
    export_agent_networks(net, hetero_spec, out, quantize=["int8", "fp16"])
    return net, out


def test_graphs_of_a_trained_run_hold_none_of_its_mixer(trained_run: Path, tmp_path: Path) -> None:
    """Export the run directory (whose checkpoint holds the mixer the exporter loads) and look for
    every mixer and hypernetwork weight of that checkpoint in every graph."""
    out = tmp_path / "art"
    export_run(trained_run, out, use_env=False)
    run = load_run(trained_run)
    assert run.mixer is not None  # a qmix run: the checkpoint really carries a mixer
    mixer_params = [p.detach().numpy() for p in run.mixer.parameters()]
    mixer_shapes = {p.shape for p in mixer_params if p.ndim == 2}
    for index, agent in enumerate(run.spec.agents):
        path = out / f"{agent.agent_id}.onnx"
        arrays = _initializers(path)
        # The search finds what is there: the agent's own recurrent weights are present ...
        assert _contains(arrays, run.agent_net.gru_hh.for_agent(index)[0].detach().numpy())
        # ... and nothing of the mixer is.
        for p in mixer_params:
            assert not _contains(arrays, p)
        assert not any(a.shape in mixer_shapes for a in arrays if a.ndim == 2)
        inputs = {i.name for i in onnx.load(str(path)).graph.input}
        local = {
            TensorNames.OBS,
            TensorNames.ACTION_MASK,
            TensorNames.PREV_ACTION,
            TensorNames.H_IN,
        }
        assert inputs <= local  # its own inputs only: no global state


def test_graphs_take_local_inputs_only(
    exported: tuple[AgentNetwork, Path], hetero_spec: EnvSpec
) -> None:
    _, out = exported
    for agent in hetero_spec.agents:
        model = onnx.load(str(out / f"{agent.agent_id}.onnx"))
        inputs = [i.name for i in model.graph.input]
        assert inputs == [
            TensorNames.OBS,
            TensorNames.ACTION_MASK,
            TensorNames.PREV_ACTION,
            TensorNames.H_IN,
        ]
        dims = [d.dim_value for i in model.graph.input for d in i.type.tensor_type.shape.dim]
        assert hetero_spec.state_dim not in dims  # no global-state sized input anywhere


def test_each_graph_holds_exactly_its_own_weight_slice(
    exported: tuple[AgentNetwork, Path], hetero_spec: EnvSpec
) -> None:
    net, out = exported
    h = net.hidden_dim
    for index, agent in enumerate(hetero_spec.agents):
        arrays = _initializers(out / f"{agent.agent_id}.onnx")
        w_ih, _ = net.gru_ih.for_agent(index)
        w_hh, _ = net.gru_hh.for_agent(index)
        assert _contains(arrays, w_ih.detach().numpy())
        assert _contains(arrays, w_hh.detach().numpy())
        for other in range(hetero_spec.n_agents):
            if other != index:
                assert not _contains(arrays, net.gru_ih.for_agent(other)[0].detach().numpy())
                assert not _contains(arrays, net.gru_hh.for_agent(other)[0].detach().numpy())
        # Parameter count of one agent at its true sizes: fc1 (obs rows + prev-action rows + bias),
        # GRU (2 x (H*3H + 3H)), output (H*n + n). Nothing else of the team is present.
        n, d = agent.n_actions, agent.obs_dim
        expected = d * h + (n + 1) * h + h + 2 * (h * 3 * h + 3 * h) + h * n + n
        float_params = sum(a.size for a in arrays if a.dtype == np.float32 and a.size > 1)
        assert float_params == expected


def test_graph_rules_and_metadata_mirror(
    exported: tuple[AgentNetwork, Path], hetero_spec: EnvSpec
) -> None:
    _, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    for agent in hetero_spec.agents:
        for precision, name in (
            ("fp32", f"{agent.agent_id}.onnx"),
            ("int8", f"{agent.agent_id}.int8.onnx"),
            ("fp16", f"{agent.agent_id}.fp16.onnx"),
        ):
            model = onnx.load(str(out / name))
            onnx.checker.check_model(model, full_check=True)
            meta = {p.key: p.value for p in model.metadata_props}
            assert meta[METADATA_AGENT_KEY] == agent.agent_id
            assert meta[METADATA_PRECISION_KEY] == precision
            mirror = json.loads(meta[METADATA_MANIFEST_KEY])
            assert "sha256" not in json.dumps(mirror)
            assert mirror["agent_ids"] == manifest["agent_ids"]
            assert mirror["run_id"] == manifest["run_id"]
            assert [a["parity"] for a in mirror["agents"]] == [
                a["parity"] for a in manifest["agents"]
            ]
            if precision == "fp32":
                assert {(o.domain, o.version) for o in model.opset_import} == {("", OPSET)}
                assert {n.domain for n in model.graph.node} == {""}
                assert model.ir_version <= MAX_IR_VERSION
                assert not any(t.external_data for t in model.graph.initializer)
                # dynamic batch dimension on every input and output
                for v in [*model.graph.input, *model.graph.output]:
                    assert v.type.tensor_type.shape.dim[0].dim_param
