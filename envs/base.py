"""The team environment interface: one environment, fixed agent order, padded numpy arrays.

Every adapter (PettingZoo parallel envs, the built-in matrix games, Gymnasium copies) implements
`TeamEnv`, and everything above it (the trainer's collector, the coordinator's simulation mode, the
single-process reference evaluation) sees only this interface. No torch here.
"""

from __future__ import annotations

import abc

import numpy as np

from .errors import EnvError
from .spec import EnvSpec, StepResult, TeamStep


class TeamEnv(abc.ABC):
    """One cooperative environment seen as a team."""

    spec: EnvSpec

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> TeamStep:
        """Start an episode (seeded when ``seed`` is given) and return the first team step."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Apply one action per agent (int64, shape (n_agents,), spec order).

        Actions of agents that are not alive are ignored. An action that is not available to its
        agent raises `EnvError`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the environment's resources."""

    def check_actions(self, actions: np.ndarray, current: TeamStep) -> np.ndarray:
        """Validate a joint action against the current availability; return it as int64."""
        acts = np.asarray(actions)
        n = self.spec.n_agents
        if acts.shape != (n,):
            raise EnvError(
                f"expected one action per agent, shape ({n},); found shape {acts.shape}. "
                "Pass actions in the spec's agent order."
            )
        if not np.issubdtype(acts.dtype, np.integer):
            raise EnvError(f"expected integer actions; found dtype {acts.dtype}")
        acts = acts.astype(np.int64)
        n_actions = current.avail.shape[1]
        in_range = (acts >= 0) & (acts < n_actions)
        allowed = in_range & current.avail[np.arange(n), np.clip(acts, 0, n_actions - 1)]
        bad = np.flatnonzero(current.alive & ~allowed)  # actions of absent agents are ignored
        if bad.size:
            i = int(bad[0])
            raise EnvError(
                f"action {int(acts[i])} is not available to agent {self.spec.agents[i].agent_id!r}; "
                f"available: {np.flatnonzero(current.avail[i]).tolist()}"
            )
        return acts


def check_engine_args(n_envs: int, team_reward: str) -> None:
    """The arguments every batched engine (one call steps all worlds) checks first."""
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise EnvError(f"n_envs must be a positive integer; found {n_envs!r}")
    if team_reward not in ("sum", "mean"):
        raise EnvError(f"team_reward must be 'sum' or 'mean'; found {team_reward!r}")
