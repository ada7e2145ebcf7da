"""Mixing networks: how per-agent utilities Q_i combine into the team value Q_tot.

- ``qmix`` (Rashid et al., ICML 2018, arXiv:1803.11485, section 4): a two-layer mixing network whose
  weights and biases are produced by hypernetworks conditioned on the global state. Mixing weights
  pass through |.| so dQ_tot/dQ_i >= 0 (monotonicity), which makes each agent's greedy action
  consistent with the argmax of Q_tot. ELU between the layers; the final bias V(s) is a 2-layer MLP.
  Hypernetworks have 1 layer (the paper) or 2 (pymarl's ``hypernet_layers: 2``).
- ``vdn`` (Sunehag et al. 2017): Q_tot = sum_i Q_i.
- ``none``: independent Q-learning; there is no Q_tot and each agent learns from the team reward.

Mixers exist only on the workstation: nothing here is ever exported. `registry.MIXERS` names them
and builds them from a config.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


class VDNMixer(nn.Module):
    """Q_tot = sum of agent utilities. ``agent_qs`` (..., n_agents) -> (...,)."""

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        del states
        return agent_qs.sum(dim=-1)


class QMixer(nn.Module):
    """QMIX's monotonic mixing network. ``agent_qs`` (..., n_agents), ``states`` (..., state_dim) -> (...,)."""

    def __init__(
        self,
        n_agents: int,
        state_dim: int,
        embed_dim: int = 32,
        hypernet_layers: Literal[1, 2] = 1,
        hypernet_embed: int = 64,
    ) -> None:
        super().__init__()
        if hypernet_layers not in (1, 2):
            raise ValueError(f"hypernet_layers must be 1 or 2; found {hypernet_layers!r}")
        self.n_agents = n_agents
        self.state_dim = state_dim
        self.embed_dim = embed_dim

        def hyper(out: int) -> nn.Module:
            if hypernet_layers == 1:
                return nn.Linear(state_dim, out)
            return nn.Sequential(
                nn.Linear(state_dim, hypernet_embed), nn.ReLU(), nn.Linear(hypernet_embed, out)
            )

        self.hyper_w1 = hyper(n_agents * embed_dim)
        self.hyper_w_final = hyper(embed_dim)
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.hyper_v = nn.Sequential(
            nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1)
        )

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        if states is None:
            raise ValueError("the qmix mixer is conditioned on the global state; pass states")
        lead = agent_qs.shape[:-1]
        qs = agent_qs.reshape(-1, self.n_agents, 1)  # (B, n_agents, 1)
        s = states.reshape(-1, self.state_dim)  # (B, state_dim)
        w1 = torch.abs(self.hyper_w1(s)).view(-1, self.n_agents, self.embed_dim)  # (B, n, E)
        b1 = self.hyper_b1(s)  # (B, E)
        # The products of one row by a (n, E) matrix per sample, written as broadcast and sum:
        # bmm over thousands of 1 x n matrices ran several times slower on CPU.
        hidden = F.elu((qs * w1).sum(dim=1) + b1)  # (B, E)
        w_final = torch.abs(self.hyper_w_final(s))  # (B, E)
        v = self.hyper_v(s).view(-1)  # (B,)
        q_tot = (hidden * w_final).sum(dim=1) + v  # (B,)
        return q_tot.view(lead)
