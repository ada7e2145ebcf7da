"""Agent utility networks: one Q-network per agent, shared or not, MLP or GRU.

The agent network is the only part of QMIX that leaves the workstation: `qmix_edge.export` wraps one
agent's slice of it into an ONNX graph. It sees only that agent's own inputs:

    input = [ own observation (zero-padded to the largest agent)
            | one-hot previous action (optional; all zeros at t=0)
            | one-hot agent id (optional) ]

Architectures (Rashid et al. 2018, QMIX; pymarl's `rnn_agent` and EPyMARL's MLP agent):
- ``mlp``: FC -> ReLU -> FC -> ReLU -> FC.
- ``gru``: FC -> ReLU -> GRUCell -> FC. Hidden state belongs to one agent and is reset at episode
  start by the caller (pass ``h=None`` or zeros).

With parameter sharing off, each agent has its own weights; the per-agent layers are stored as one
stacked tensor (``GroupedLinear``) so all agents still run in one batched matmul.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from qmix_edge.envs import EnvSpec

ARCHITECTURES = ("mlp", "gru")
"""The architectures `AgentNetwork` implements (`registry.AGENT_NETWORKS` offers them by name)."""


class GroupedLinear(nn.Module):
    """A linear layer with one weight set per agent (``groups = n_agents``) or one shared (``groups = 1``).

    Input ``(..., n_agents, in_features)`` -> output ``(..., n_agents, out_features)``.
    Initialised like `torch.nn.Linear` (Kaiming-uniform weights, fan-in uniform bias). The weight is
    stored ``(groups, out_features, in_features)``, torch.nn.Linear's layout, because BLAS runs the
    small-output products of these networks several times faster with it; `for_agent` returns the
    ``(in, out)`` matrix, so ``x @ w + b`` is this agent's layer.
    """

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.groups = groups
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(groups, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return F.linear(x, self.weight[0], self.bias[0])
        # x: (..., n_agents, in) ; weight: (n_agents, out, in)
        return torch.einsum("...ni,noi->...no", x, self.weight) + self.bias

    def for_agent(self, agent_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This agent's (weight (in, out), bias (out,)): what the exporter folds into its graph."""
        g = 0 if self.groups == 1 else agent_index
        return self.weight[g].t(), self.bias[g]

    def slice(self, agent_index: int, rows: int | None = None) -> nn.Linear:
        """This agent's layer as a frozen `torch.nn.Linear` (the same product as one group).

        ``rows`` keeps only the first ``rows`` outputs (an agent's own action count).
        """
        g = 0 if self.groups == 1 else agent_index
        out = self.out_features if rows is None else rows
        one = nn.Linear(self.in_features, out)
        with torch.no_grad():
            one.weight.copy_(self.weight[g, :out])
            one.bias.copy_(self.bias[g, :out])
        return one.requires_grad_(False)


class AgentNetwork(nn.Module):
    """The per-agent Q-networks of a team, batched over agents.

    Shapes: ``obs`` (..., n_agents, max_obs_dim); ``prev_action`` (..., n_agents) int64 with -1 for
    none; Q-values (..., n_agents, max_n_actions); hidden (..., n_agents, hidden_dim).
    """

    agent_ids: torch.Tensor

    def __init__(
        self,
        spec: EnvSpec,
        kind: str = "mlp",
        hidden_dim: int = 64,
        share_params: bool = True,
        use_prev_action: bool = False,
        use_agent_id: bool = True,
    ) -> None:
        super().__init__()
        if kind not in ARCHITECTURES:
            raise ValueError(
                f"agent network kind must be one of {list(ARCHITECTURES)}; found {kind!r}"
            )
        self.kind = kind
        self.n_agents = spec.n_agents
        self.obs_dim = spec.max_obs_dim
        self.n_actions = spec.max_n_actions
        self.hidden_dim = hidden_dim
        self.share_params = share_params
        self.use_prev_action = use_prev_action
        self.use_agent_id = use_agent_id
        groups = 1 if share_params else spec.n_agents
        h = hidden_dim
        self.fc1 = GroupedLinear(groups, self.input_dim, h)
        if kind == "mlp":
            self.fc2 = GroupedLinear(groups, h, h)
            self.out = GroupedLinear(groups, h, self.n_actions)
        else:
            # GRUCell as in torch.nn.GRUCell, gate order (reset, update, new).
            self.gru_ih = GroupedLinear(groups, h, 3 * h)
            self.gru_hh = GroupedLinear(groups, h, 3 * h)
            self.out = GroupedLinear(groups, h, self.n_actions)
        self.register_buffer("agent_ids", torch.eye(spec.n_agents), persistent=False)

    @property
    def recurrent(self) -> bool:
        return self.kind == "gru"

    @property
    def input_dim(self) -> int:
        d = self.obs_dim
        if self.use_prev_action:
            d += self.n_actions
        if self.use_agent_id:
            d += self.n_agents
        return d

    def initial_hidden(self, *batch_shape: int) -> torch.Tensor:
        """Zeros of shape (*batch_shape, n_agents, hidden_dim): the state at episode start."""
        return torch.zeros(*batch_shape, self.n_agents, self.hidden_dim)

    def build_inputs(self, obs: torch.Tensor, prev_action: torch.Tensor | None) -> torch.Tensor:
        """Concatenate the optional one-hot parts onto ``obs`` -> (..., n_agents, input_dim)."""
        parts = [obs]
        if self.use_prev_action:
            if prev_action is None:
                raise ValueError("this network was built with use_prev_action; pass prev_action")
            # -1 (no previous action) maps to all zeros.
            onehot = F.one_hot((prev_action + 1).clamp(min=0), self.n_actions + 1)[..., 1:]
            parts.append(onehot.to(obs.dtype))
        if self.use_agent_id:
            parts.append(self.agent_ids.expand(*obs.shape[:-1], self.n_agents))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else obs

    def forward(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Q-values (..., n_agents, n_actions) and the next hidden state (None for ``mlp``)."""
        return self.head(self.fc1(self.build_inputs(obs, prev_action)), hidden)

    def head(
        self, pre: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The architecture after the first layer's affine map ``pre`` (..., hidden_dim).

        The one definition of what an agent computes: `forward` feeds it the team's first layer, and
        the exporter feeds it one agent's first layer at that agent's true input size (its graph
        wraps `agent_slice`). Returns Q-values (..., n_actions) and the next hidden state.
        """
        x = F.relu(pre)  # (..., hidden)
        if self.kind == "mlp":
            return self.out(F.relu(self.fc2(x))), None
        if hidden is None:
            hidden = torch.zeros_like(x)
        h_next = gru_cell(hidden, self.gru_ih(x), self.gru_hh(hidden))  # (..., hidden)
        return self.out(h_next), h_next

    def unroll(self, obs: torch.Tensor, prev_action: torch.Tensor | None = None) -> torch.Tensor:
        """Q-values of every step of a batch of episodes from a zero hidden state.

        ``obs`` (B, T, n_agents, obs_dim); ``prev_action`` (B, T, n_agents) -> (B, T, n_agents,
        n_actions). The same values as calling `forward` step by step with the hidden state
        carried. A shared-weight GRU runs the whole sequence in torch's fused recurrent kernel
        (one call instead of a Python loop of T cell steps, about 1.6x faster to train on CPU);
        per-agent weights step the cell.
        """
        x = self.fc1(self.build_inputs(obs, prev_action))  # (B, T, n, hidden)
        if not self.recurrent:
            return self.head(x)[0]
        x = F.relu(x)
        if self.gru_ih.groups == 1:
            b, t, n, h = x.shape
            seq = x.permute(0, 2, 1, 3).reshape(b * n, t, h)  # (B * n, T, hidden)
            weights = {
                "weight_ih_l0": self.gru_ih.weight[0],
                "weight_hh_l0": self.gru_hh.weight[0],
                "bias_ih_l0": self.gru_ih.bias[0],
                "bias_hh_l0": self.gru_hh.bias[0],
            }
            hs, _ = functional_call(self._fused_gru(), weights, (seq,))  # (B * n, T, hidden)
            return self.out(hs.reshape(b, n, t, h).permute(0, 2, 1, 3))
        hidden = torch.zeros_like(x[:, 0])  # (B, n, hidden)
        outs = []
        for step in range(x.shape[1]):
            hidden = gru_cell(hidden, self.gru_ih(x[:, step]), self.gru_hh(hidden))
            outs.append(hidden)
        return self.out(torch.stack(outs, dim=1))

    def _fused_gru(self) -> nn.GRU:
        """An `nn.GRU` of this network's sizes whose weights `unroll` substitutes (same gate
        order and layout as `gru_cell` and `GroupedLinear`); made once, never trained itself."""
        gru = getattr(self, "_gru_kernel", None)
        if gru is None:
            gru = nn.GRU(self.hidden_dim, self.hidden_dim, batch_first=True).requires_grad_(False)
            object.__setattr__(self, "_gru_kernel", gru)  # not a submodule: no state, no params
        return gru

    def agent_slice(self, agent_index: int, n_actions: int | None = None) -> AgentNetwork:
        """A frozen copy of this network with only agent ``agent_index``'s weights (one group).

        Its layers are plain `torch.nn.Linear` modules; its `head` runs that agent's own layers on
        inputs without an agent axis, ``(batch, hidden)``, and returns Q-values for the first
        ``n_actions`` actions only (the agent's own count; default all). Only `head` is meant to be
        called: the first layer is sliced too, for the caller to fold into its own input encoding.
        """
        if not 0 <= agent_index < self.n_agents:
            raise ValueError(f"agent index {agent_index} out of range 0..{self.n_agents - 1}")
        one = copy.deepcopy(self)
        for name in ("fc1", "fc2", "gru_ih", "gru_hh", "out"):
            layer = getattr(self, name, None)
            if isinstance(layer, GroupedLinear):
                keep = n_actions if name == "out" else None
                setattr(one, name, layer.slice(agent_index, rows=keep))
        if n_actions is not None:
            one.n_actions = n_actions
        one.share_params = True
        return one.eval().requires_grad_(False)


def gru_cell(h: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor) -> torch.Tensor:
    """The GRUCell update given the input and hidden projections (gate order r, z, n as torch)."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h
