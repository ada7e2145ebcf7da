"""The team model: the seats an artifact manifest describes (`AgentSlot`, `TeamSpec`), the
simulation environment made for them (`make_team_env`) and the check that an environment matches
them (`check_env_matches`).

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TeamMismatchError


@dataclass(frozen=True)
class AgentSlot:
    """One seat of the team, as the artifact manifest describes it."""

    agent_id: str
    """The agent's id, e.g. ``agent_0``."""
    obs_dim: int
    """Length of the agent's own observation."""
    n_actions: int
    """The agent's number of actions."""
    fallback_action: int
    """Action applied when the agent's decision is missing."""
    sha256s: frozenset[str]
    """Graph hashes a joining agent may present: its fp32 graph and any reduced-precision copy."""


@dataclass(frozen=True)
class TeamSpec:
    """The team a coordinator serves: who may join, with which artifact."""

    team_id: str
    """The training run the artifacts come from (manifest ``run_id``)."""
    agents: tuple[AgentSlot, ...]
    """Seats in the environment's agent order."""
    env_id: str = ""
    """The environment the policy was trained on (simulation default)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Its keyword arguments."""
    env_options: Mapping[str, Any] = field(default_factory=dict)
    """The other `make_env` arguments of training (n_agents, team_reward, episode_limit)."""

    @property
    def agent_ids(self) -> tuple[str, ...]:
        return tuple(a.agent_id for a in self.agents)

    def index(self, agent_id: str) -> int | None:
        for i, a in enumerate(self.agents):
            if a.agent_id == agent_id:
                return i
        return None

    @classmethod
    def from_manifest(cls, manifest: Any) -> TeamSpec:
        """Build the team from a `qmix_edge.runtime.artifact.Manifest`."""
        return cls(
            team_id=manifest.run_id,
            agents=tuple(
                AgentSlot(
                    agent_id=a.agent_id,
                    obs_dim=int(a.obs_dim),
                    n_actions=int(a.n_actions),
                    fallback_action=int(a.fallback_action),
                    sha256s=frozenset([a.sha256, *(v.sha256 for v in a.variants)]),
                )
                for a in manifest.agents
            ),
            env_id=manifest.env_id,
            env_kwargs=dict(manifest.env_kwargs),
            env_options=dict(manifest.env_options),
        )

    @classmethod
    def from_artifacts(cls, artifact_dir: str | Path, public_key: Any = None) -> TeamSpec:
        """Load and verify the manifest of an artifact directory and build the team from it."""
        from ..artifact import Manifest

        return cls.from_manifest(Manifest.load(artifact_dir, public_key=public_key))


def make_team_env(
    team: TeamSpec, env_id: str | None = None, episode_limit: int | None = None
) -> Any:
    """Make the simulation environment of ``team`` with `qmix_edge.envs.make_env`.

    Without ``env_id`` it is the training environment recorded in the manifest (id, kwargs, team
    size, team reward, episode limit); with one, that id with the manifest's team size.
    """
    from qmix_edge.envs import make_env

    opts = {k: v for k, v in team.env_options.items() if v is not None}
    same = env_id is None or env_id == team.env_id
    kwargs: dict[str, Any] = {
        "n_agents": int(opts.get("n_agents", len(team.agents))),
        "episode_limit": episode_limit or (opts.get("episode_limit") if same else None),
    }
    if same and "team_reward" in opts:
        kwargs["team_reward"] = opts["team_reward"]
    env = make_env(
        env_id or team.env_id, env_kwargs=dict(team.env_kwargs) if same else None, **kwargs
    )
    check_env_matches(team, env)
    return env


def check_env_matches(team: TeamSpec, env: Any) -> None:
    """Raise `TeamMismatchError` unless ``env``'s agents are ``team``'s seats (ids, sizes, order)."""
    spec = env.spec
    found = [(a.agent_id, a.obs_dim, a.n_actions) for a in spec.agents]
    expected = [(a.agent_id, a.obs_dim, a.n_actions) for a in team.agents]
    if found != expected:
        raise TeamMismatchError(
            f"the environment {spec.env_id!r} has agents (id, obs_dim, n_actions) {found}, but the "
            f"artifact expects {expected}. Run the coordinator with the env (and n_agents, "
            "env kwargs) the policy was trained on."
        )
