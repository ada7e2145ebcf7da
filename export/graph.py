"""One agent's network as a self-contained ONNX graph: the wrapper module and the ONNX export.

`AgentGraph` takes a trained team `AgentNetwork` and one agent index and keeps only what that agent
runs on its device. It wraps that agent's slice of the trained network (`AgentNetwork.agent_slice`)
and runs the network's own `head`, so the architecture is defined once, in `qmix_edge.train.networks`:

- its own weight slice, so no other agent's weights and nothing of the mixer or its hypernetworks is
  in the graph;
- its true observation size: training zero-pads every observation to the largest agent's size, and
  zeros times the padding rows of the first layer contribute nothing, so the padding rows are dropped
  and the graph takes ``obs`` at ``[batch, obs_dim]`` (same arithmetic, smaller graph);
- the agent-id one-hot as a constant: ``onehot(i) @ W_id`` is row ``i`` of ``W_id``, folded into the
  first layer's bias;
- the previous-action one-hot (when trained with it) as a row lookup in ``[0; W_prev]`` at index
  ``prev_action + 1`` (``-1`` = none -> the zero row), exactly the training one-hot's product;
- its own action count: Q-values are sliced to the agent's ``n_actions``;
- ``action`` = argmax of Q over allowed actions, ties to the lowest index (as ``torch.argmax`` and
  ONNX ``ArgMax`` with ``select_last_index=0``).

Inputs and outputs are named by `qmix_edge.runtime.tensors.TensorNames`; the batch dimension is
dynamic. The ONNX export uses the torch.export-based exporter (``dynamo=True``), the maintained one
in torch 2.13, at a pinned opset; the result is checked with ``onnx.checker`` (full check) and for the
artifact rules (no external data, no custom domains, IR version the pinned onnxruntime loads).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Final

import onnx
import torch
from torch import nn
from torch.nn import functional as F

from qmix_edge.envs import EnvSpec
from qmix_edge.runtime.tensors import TensorNames
from qmix_edge.train.networks import AgentNetwork

from .errors import ExportError

log = logging.getLogger(__name__)

OPSET: Final = 18
"""The ONNX opset every graph is exported at (onnxruntime >= 1.14 runs it)."""
MAX_IR_VERSION: Final = 10
"""The highest ONNX IR version written; onnxruntime 1.20+ (the base install's floor) loads it."""
ALLOWED_DOMAINS: Final = frozenset({"", "ai.onnx"})
"""Operator domains a graph may use: the standard ONNX operators only, no custom ops."""


class AgentGraph(nn.Module):
    """One agent's decentralised policy: own inputs at true sizes -> Q-values, greedy action, state.

    ``forward(obs, action_mask[, prev_action][, h_in])`` -> ``(q_values, action[, h_out])`` with
    obs (B, obs_dim) float32, action_mask (B, n_actions) bool, prev_action (B,) int64 (-1 = none),
    h_in (B, hidden) float32; q_values (B, n_actions), action (B,) int64, h_out (B, hidden).
    """

    def __init__(self, net: AgentNetwork, spec: EnvSpec, agent_index: int) -> None:
        super().__init__()
        if spec.n_agents != net.n_agents or spec.max_obs_dim != net.obs_dim:
            raise ExportError(
                f"the env spec ({spec.n_agents} agents, max obs {spec.max_obs_dim}) does not match "
                f"the agent network ({net.n_agents} agents, obs {net.obs_dim}); export with the spec "
                "the network was trained on"
            )
        if not 0 <= agent_index < spec.n_agents:
            raise ExportError(f"agent index {agent_index} out of range 0..{spec.n_agents - 1}")
        agent = spec.agents[agent_index]
        self.agent_id = agent.agent_id
        self.obs_dim = agent.obs_dim
        self.n_actions = agent.n_actions
        self.recurrent = net.recurrent
        self.uses_prev_action = net.use_prev_action
        self.hidden_dim = net.hidden_dim

        # The agent's own layers, run by the trained network's own `head` (the architecture is
        # defined once, in `AgentNetwork`); only the first layer is folded here, because the graph's
        # inputs differ from training's by design (true obs size, prev-action index, no agent id).
        self.net = net.agent_slice(agent_index, n_actions=self.n_actions)
        with torch.no_grad():
            w1, b1 = (t.detach().clone() for t in net.fc1.for_agent(agent_index))  # (in, H), (H,)
            # Row blocks of fc1's input, in `AgentNetwork.build_inputs` order.
            w_obs = w1[: self.obs_dim]  # (obs_dim, H): padding rows dropped (they meet zeros)
            offset = net.obs_dim
            w_prev = torch.zeros(1, net.hidden_dim)
            if net.use_prev_action:
                rows = w1[offset : offset + self.n_actions]  # (n_actions, H)
                w_prev = torch.cat([torch.zeros(1, net.hidden_dim), rows], dim=0)
                offset += net.n_actions
            if net.use_agent_id:
                b1 = b1 + w1[offset + agent_index]  # onehot(i) @ W_id == W_id[i]
        del self.net.fc1  # folded into the parameters below; nothing else of it is exported
        self.w_obs = nn.Parameter(w_obs.contiguous(), requires_grad=False)
        self.b1 = nn.Parameter(b1.contiguous(), requires_grad=False)
        self.w_prev = nn.Parameter(w_prev.contiguous(), requires_grad=False)  # (n_actions+1, H)
        self.eval()

    @property
    def input_names(self) -> list[str]:
        names = [TensorNames.OBS, TensorNames.ACTION_MASK]
        if self.uses_prev_action:
            names.append(TensorNames.PREV_ACTION)
        if self.recurrent:
            names.append(TensorNames.H_IN)
        return names

    @property
    def output_names(self) -> list[str]:
        names = [TensorNames.Q_VALUES, TensorNames.ACTION]
        if self.recurrent:
            names.append(TensorNames.H_OUT)
        return names

    def forward(
        self,
        obs: torch.Tensor,
        action_mask: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        h_in: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        pre = obs @ self.w_obs + self.b1  # (B, H)
        if self.uses_prev_action:
            assert prev_action is not None  # the exporter always passes it
            pre = pre + F.embedding(prev_action + 1, self.w_prev)  # (B, H); -1 -> zero row
        q, h_next = self.net.head(pre, h_in)  # (B, n_actions), (B, H) or None
        masked = torch.where(action_mask, q, float("-inf"))  # (B, n_actions)
        action = torch.argmax(masked, dim=-1)  # (B,) int64; the first maximum wins
        if h_next is not None:
            return q, action, h_next
        return q, action

    def example_inputs(self, batch: int = 2) -> dict[str, torch.Tensor]:
        """Dummy inputs by name, of the right dtypes and shapes, used to trace the export."""
        inputs = {
            TensorNames.OBS: torch.zeros(batch, self.obs_dim),
            TensorNames.ACTION_MASK: torch.ones(batch, self.n_actions, dtype=torch.bool),
        }
        if self.uses_prev_action:
            inputs[TensorNames.PREV_ACTION] = torch.full((batch,), -1, dtype=torch.int64)
        if self.recurrent:
            inputs[TensorNames.H_IN] = torch.zeros(batch, self.hidden_dim)
        return inputs


@contextlib.contextmanager
def _quiet_exporter_registry() -> Iterator[None]:
    """Silence the exporter's registry warnings ("torchvision is not installed. Skipping ...").

    They are printed for every export, say nothing about our graphs (which use no torchvision op)
    and would bury the exporter's own output.
    """
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registry.setLevel(level)


def export_graph(graph: AgentGraph) -> onnx.ModelProto:
    """Export ``graph`` to an in-memory ONNX model at `OPSET` with a dynamic batch dimension.

    Raises `ExportError` when the exporter fails or the result breaks an artifact rule.
    """
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    inputs = graph.example_inputs()
    dynamic_shapes = {name: {0: batch} for name in inputs}
    try:
        with warnings.catch_warnings(), _quiet_exporter_registry():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (),
                kwargs=inputs,
                dynamo=True,
                opset_version=OPSET,
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as e:
        raise ExportError(
            f"torch.onnx.export failed for agent {graph.agent_id!r}: {e}. "
            "This is a bug in the exporter wrapper or an unsupported torch version; report it "
            "with the traceback."
        ) from e
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise ExportError("torch.onnx.export returned no program")
    model = program.model_proto
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    model.producer_name = "qmix-edge"
    check_model(model, graph)
    return model


def check_model(model: onnx.ModelProto, graph: AgentGraph) -> None:
    """The artifact rules: checker passes, standard domains only, no external data, right I/O."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(
            f"onnx.checker rejected the graph of agent {graph.agent_id!r}: {e}"
        ) from e
    domains = {op.domain for op in model.opset_import} | {n.domain for n in model.graph.node}
    if not domains <= ALLOWED_DOMAINS or len(model.functions) > 0:
        raise ExportError(
            f"the graph of agent {graph.agent_id!r} uses operator domains {sorted(domains)} or local "
            f"functions ({len(model.functions)}); only standard ONNX operators are allowed"
        )
    opsets = {op.domain: op.version for op in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != OPSET:
        raise ExportError(f"expected opset {OPSET}; the exporter wrote {opsets}")
    if model.ir_version > MAX_IR_VERSION:
        raise ExportError(f"expected IR version <= {MAX_IR_VERSION}; found {model.ir_version}")
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL or init.external_data:
            raise ExportError(f"initializer {init.name!r} uses external data; expected none")
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != graph.input_names or outputs != graph.output_names:
        raise ExportError(
            f"expected inputs {graph.input_names} and outputs {graph.output_names}; "
            f"the exported graph has {inputs} and {outputs}"
        )
