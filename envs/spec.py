"""The environment contract shared by training, export and the coordinator.

Owns the data types every environment adapter produces: `AgentSpec` and `EnvSpec` (sizes, agent
order, limits) and `TeamStep` (one team observation, padded to the largest agent). Numpy only: this
module, like all of `qmix_edge.envs`, must never import torch, because the coordinator imports it on
devices and simulation hosts that have no torch.

Conventions (the same everywhere):
- Agent order is the environment's `possible_agents`.
- Per-agent arrays are padded to the largest observation size and action count; an agent's true
  observation is `obs[i, :agents[i].obs_dim]` and its true actions are the first `n_actions`.
- An agent that has left the episode (removed from `env.agents`) is not `alive`; its observation is
  zeros and only action 0 is available to it (a placeholder the environment never receives).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class AgentSpec:
    """One agent as the environment declares it."""

    agent_id: str
    """The PettingZoo agent name, e.g. ``agent_0``."""
    obs_dim: int
    """Length of the agent's own flat observation vector (without the action mask)."""
    n_actions: int
    """Number of discrete actions of this agent."""

    def to_dict(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "obs_dim": self.obs_dim, "n_actions": self.n_actions}


@dataclass(frozen=True)
class EnvSpec:
    """Sizes and limits of one team environment, in agent order."""

    env_id: str
    """The id the environment was made from, as the user wrote it (e.g. ``mpe2:simple_spread_v3``)."""
    agents: tuple[AgentSpec, ...]
    """All agents that can take part, in ``possible_agents`` order."""
    state_dim: int
    """Length of the global state vector (``env.state()``, or all observations concatenated)."""
    episode_limit: int
    """Maximum number of env steps in one episode; reaching it is truncation, not termination."""
    has_action_masks: bool = False
    """Whether the environment supplies action masks (dict observations or ``info``)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments the environment was made with."""

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def agent_ids(self) -> tuple[str, ...]:
        return tuple(a.agent_id for a in self.agents)

    @property
    def max_obs_dim(self) -> int:
        return max(a.obs_dim for a in self.agents)

    @property
    def max_n_actions(self) -> int:
        return max(a.n_actions for a in self.agents)

    @property
    def heterogeneous(self) -> bool:
        return len({(a.obs_dim, a.n_actions) for a in self.agents}) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "env_kwargs": dict(self.env_kwargs),
            "agents": [a.to_dict() for a in self.agents],
            "state_dim": self.state_dim,
            "episode_limit": self.episode_limit,
            "has_action_masks": self.has_action_masks,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnvSpec:
        return cls(
            env_id=str(d["env_id"]),
            env_kwargs=dict(d.get("env_kwargs", {})),
            agents=tuple(AgentSpec(**a) for a in d["agents"]),
            state_dim=int(d["state_dim"]),
            episode_limit=int(d["episode_limit"]),
            has_action_masks=bool(d.get("has_action_masks", False)),
        )


class TeamStep(NamedTuple):
    """What the team sees at one time step of one environment (agents in spec order)."""

    obs: np.ndarray
    """float32 (n_agents, max_obs_dim): own observations, zero-padded; zeros for absent agents."""
    avail: np.ndarray
    """bool (n_agents, max_n_actions): allowed actions; False past an agent's own action count."""
    alive: np.ndarray
    """bool (n_agents,): the agent is still in the episode (in ``env.agents``)."""
    state: np.ndarray
    """float32 (state_dim,): the global state (for the mixer only; never sent to an agent)."""


class StepResult(NamedTuple):
    """The outcome of one team step."""

    next: TeamStep
    """The team's view after the step (meaningless once ``done``, but well-formed)."""
    reward: float
    """Team reward of this step: sum (default) or mean of the agents' rewards."""
    terminated: bool
    """The episode reached a real terminal state: do not bootstrap."""
    truncated: bool
    """The episode was cut by a time limit: bootstrap from ``next``."""
    agent_rewards: np.ndarray
    """float32 (n_agents,): each agent's own reward this step (0 for absent agents)."""

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated
