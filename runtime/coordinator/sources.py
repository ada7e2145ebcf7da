"""What feeds the step clock: a `StepSource` says which seats are in the episode, what each agent
is sent (observations and masks, or nothing), and what the team's actions did.

- `SimulatedSource`: the coordinator owns the environment (simulation mode). Every step carries
  the agent's own observation and mask and its previous action; the actions are applied to the
  environment and its reward recorded.
- `FieldSource`: agents read their own sensors (field mode). Steps carry no tensors; what the
  agents report is recorded.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..proto.v1 import team_pb2 as pb


class Applied(NamedTuple):
    """What one team step did."""

    reward: float
    """The team reward (0.0 where there is none)."""
    end: str | None
    """Why the episode ended at this step ("terminated", "truncated"), None when it goes on."""


class StepSource(Protocol):
    """The step clock's view of the world it paces."""

    tensors: bool
    """Step requests carry observations, masks and previous actions (and replies are checked
    against the masks)."""

    def reset(self, seed: int) -> None:
        """Start an episode (may raise: the episode then ends as ``env_error``)."""

    def alive(self) -> np.ndarray:
        """(n_agents,) bool: the seats still in the episode."""

    def observations(self) -> tuple[np.ndarray, np.ndarray]:
        """(obs (n_agents, max obs_dim), action masks (n_agents, max n_actions)); only called when
        `tensors`. The arrays may be reused by the source at the next step."""

    def apply(
        self, actions: np.ndarray, replies: Mapping[int, pb.StepReply], record: dict[str, Any]
    ) -> Applied:
        """Apply the team's ``actions`` (int64 (n_agents,), every one legal) and add what they
        did to the step's ``record`` (may raise: the episode then ends as ``env_error``)."""


class SimulatedSource:
    """A `qmix_edge.envs.TeamEnv` the coordinator owns."""

    tensors = True

    def __init__(self, env: Any) -> None:
        self.env = env
        self._ts: Any = None

    def reset(self, seed: int) -> None:
        self._ts = None
        self._ts = self.env.reset(seed=seed)

    def alive(self) -> np.ndarray:
        return np.asarray(self._ts.alive, dtype=bool)

    def observations(self) -> tuple[np.ndarray, np.ndarray]:
        ts = self._ts
        return ts.obs, ts.avail

    def apply(
        self, actions: np.ndarray, replies: Mapping[int, pb.StepReply], record: dict[str, Any]
    ) -> Applied:
        result = self.env.step(actions)
        reward = float(result.reward)
        record["reward"], record["applied"] = reward, True
        self._ts = result.next
        if result.done:
            return Applied(reward, "terminated" if result.terminated else "truncated")
        return Applied(reward, None)


class FieldSource:
    """A real team: agents sense for themselves and report; every seat is in every step."""

    tensors = False

    def __init__(self, agent_ids: tuple[str, ...]) -> None:
        self.agent_ids = agent_ids
        self._alive = np.ones(len(agent_ids), dtype=bool)

    def reset(self, seed: int) -> None:
        return None

    def alive(self) -> np.ndarray:
        return self._alive

    def observations(self) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("a field step carries no observations")  # tensors is False

    def apply(
        self, actions: np.ndarray, replies: Mapping[int, pb.StepReply], record: dict[str, Any]
    ) -> Applied:
        ids = self.agent_ids
        record["reports"] = {ids[i]: dict(r.report) for i, r in replies.items()}
        record["applied"] = True
        return Applied(0.0, None)
