"""Tiny exact cooperative games: the QMIX paper's two-step game and one-step matrix games.

These are the correctness checks of value factorisation: their optimal joint policies are known,
they have no randomness, and an episode lasts one or two steps, so learning tests on them are fast
and exact. Numpy only.

Two-step game (Rashid et al. 2018, QMIX, Figure 3): in state 1 agent 1's action picks the next
state (action 0 -> 2A, action 1 -> 2B), with reward 0. In 2A every joint action pays 7; in 2B the
payoff is [[0, 1], [1, 8]]. The optimum is 8 (go to 2B, both pick action 1); VDN, which cannot
represent the 2B matrix under uniform exploration, settles for 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import TeamEnv
from .errors import EnvError
from .spec import AgentSpec, EnvSpec, StepResult, TeamStep

TWO_STEP_PAYOFF_2A = np.full((2, 2), 7.0, dtype=np.float32)
TWO_STEP_PAYOFF_2B = np.array([[0.0, 1.0], [1.0, 8.0]], dtype=np.float32)

# A non-monotonic one-step game (Son et al. 2019, QTRAN, Table 1a): optimum 8 at (0, 0).
PENALTY_PAYOFF = np.array(
    [[8.0, -12.0, -12.0], [-12.0, 0.0, 0.0], [-12.0, 0.0, 0.0]], dtype=np.float32
)


class TwoStepGame(TeamEnv):
    """The QMIX paper's two-step game: 2 agents, 2 actions, observations = one-hot state."""

    N_STATES = 3  # 1, 2A, 2B

    def __init__(self, env_id: str = "two_step") -> None:
        agents = tuple(AgentSpec(f"agent_{i}", self.N_STATES, 2) for i in range(2))
        self.spec = EnvSpec(env_id=env_id, agents=agents, state_dim=self.N_STATES, episode_limit=2)
        self._state = 0
        self._t = 0

    def _team_step(self) -> TeamStep:
        onehot = np.zeros(self.N_STATES, dtype=np.float32)
        onehot[self._state] = 1.0
        return TeamStep(
            obs=np.tile(onehot, (2, 1)),
            avail=np.ones((2, 2), dtype=bool),
            alive=np.ones(2, dtype=bool),
            state=onehot.copy(),
        )

    def reset(self, seed: int | None = None) -> TeamStep:
        self._state, self._t = 0, 0
        self._current = self._team_step()
        return self._current

    def step(self, actions: np.ndarray) -> StepResult:
        if self._t >= 2:
            raise EnvError("the episode is over; call reset() before step()")
        a = self.check_actions(actions, self._current)
        if self._state == 0:
            reward = 0.0
            self._state = 1 if a[0] == 0 else 2
            terminated = False
        else:
            table = TWO_STEP_PAYOFF_2A if self._state == 1 else TWO_STEP_PAYOFF_2B
            reward = float(table[a[0], a[1]])
            terminated = True
        self._t += 1
        self._current = self._team_step()
        per_agent = np.full(2, reward / 2.0, dtype=np.float32)
        return StepResult(self._current, reward, terminated, False, per_agent)


class MatrixGame(TeamEnv):
    """A one-step cooperative matrix game for any number of agents: reward = payoff[a_1, ..., a_n]."""

    def __init__(
        self, payoff: np.ndarray | Sequence[Sequence[float]], env_id: str = "matrix"
    ) -> None:
        table = np.asarray(payoff, dtype=np.float32)
        if table.ndim < 1 or min(table.shape) < 1:
            raise EnvError(
                f"expected a payoff array with one axis per agent; found shape {table.shape}"
            )
        self.payoff = table
        agents = tuple(AgentSpec(f"agent_{i}", 1, n) for i, n in enumerate(table.shape))
        self.spec = EnvSpec(env_id=env_id, agents=agents, state_dim=1, episode_limit=1)
        self._over = True

    def _team_step(self) -> TeamStep:
        n = self.spec.n_agents
        return TeamStep(
            obs=np.ones((n, 1), dtype=np.float32),
            avail=np.stack(
                [np.arange(self.spec.max_n_actions) < a.n_actions for a in self.spec.agents]
            ),
            alive=np.ones(n, dtype=bool),
            state=np.ones(1, dtype=np.float32),
        )

    def reset(self, seed: int | None = None) -> TeamStep:
        self._over = False
        self._current = self._team_step()
        return self._current

    def step(self, actions: np.ndarray) -> StepResult:
        if self._over:
            raise EnvError("the episode is over; call reset() before step()")
        a = self.check_actions(actions, self._current)
        reward = float(self.payoff[tuple(a)])
        self._over = True
        n = self.spec.n_agents
        return StepResult(self._current, reward, True, False, np.full(n, reward / n, np.float32))
