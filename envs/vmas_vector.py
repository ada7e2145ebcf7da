"""`VmasVectorEnv`: VMAS's batched worlds behind the `VectorTeamEnv` contract (``backend="batched"``
for ``vmas:`` ids; what training steps).

The engine and its rules (seeds, episode ends, masks, team reward) are `vmas_env`'s; this module adds
the contract's checks (indices, seeds, the whole joint action before any world moves). Numpy only at
import: VMAS and torch are imported when an env is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .spec import TeamStep
from .vector import VectorStepResult, VectorTeamEnv, index_array, reject_unavailable, seed_list
from .vmas_env import VmasWorlds


class VmasVectorEnv(VectorTeamEnv):
    """``n_envs`` worlds of one VMAS scenario stepped in one call.

    ``options``: `VmasWorlds`' keyword arguments (``n_agents``, ``team_reward``, ``episode_limit``,
    ``env_kwargs``), the same as `BatchedSimpleSpread`'s.
    """

    def __init__(self, n_envs: int, *, env_id: str, **options: Any) -> None:
        self._worlds = VmasWorlds(n_envs, env_id=env_id, **options)
        self.spec = self._worlds.spec
        self.n_envs = n_envs

    @property
    def finished(self) -> np.ndarray:
        return ~self._worlds.running

    @property
    def t(self) -> np.ndarray:
        """int64 (n_envs,): env steps into each world's current (or last) episode."""
        return self._worlds.t.copy()

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        idx = index_array(indices, self.n_envs)
        return self._worlds.reset(idx, seed_list(seeds, idx.size))

    def step(self, actions: np.ndarray) -> VectorStepResult:
        acts = self._check_actions(actions)
        rows = np.flatnonzero(self._worlds.running)
        view = self._worlds.view(rows)
        reject_unavailable(acts[rows], view.avail, view.alive, rows, self.spec)
        return VectorStepResult(*self._worlds.step(acts))
