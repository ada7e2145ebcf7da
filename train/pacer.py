"""`UpdatePacer`: when the learner runs, so the update ratio holds without bursts of updates.

Integer and float bookkeeping only (no torch), deterministic and checkpointable with the run.
"""

from __future__ import annotations

from typing import Any


class UpdatePacer:
    """How many learner updates to run at each vector step.

    The contract is EPyMARL's ratio: ``updates_per_episode`` updates are *owed* for every finished
    episode (once replay can be sampled); or, when ``env_steps_per_update`` is given (JaxMARL's
    ratio), one update is owed per that many env steps of every finished episode. Paying them the moment a wave of episodes ends would
    leave the env workers idle during a burst of updates, so the debt is paid at the observed
    rate (updates per env step = updates_per_episode / mean episode length), spread evenly over the
    vector steps, never ahead of what is owed and never more than ``2 * n_envs`` episodes behind.
    Integer and float bookkeeping only, so it is deterministic and checkpointable.
    """

    def __init__(
        self,
        updates_per_episode: float,
        n_envs: int,
        episode_limit: int,
        env_steps_per_update: int | None = None,
    ) -> None:
        self.updates_per_episode = updates_per_episode
        self.env_steps_per_update = env_steps_per_update
        self.n_envs = n_envs
        self.episode_limit = episode_limit
        self.owed = 0.0
        self.allowance = 0.0
        self.episodes = 0
        self.episode_steps = 0
        per_episode = (
            episode_limit / env_steps_per_update if env_steps_per_update else updates_per_episode
        )
        self.max_lag = 2.0 * n_envs * per_episode + 1.0

    def episodes_finished(self, lengths: list[int], learning: bool) -> None:
        self.episodes += len(lengths)
        self.episode_steps += sum(lengths)
        if learning:
            if self.env_steps_per_update:
                self.owed += sum(lengths) / self.env_steps_per_update
            else:
                self.owed += self.updates_per_episode * len(lengths)

    def due(self) -> int:
        """Updates to run now (called once per vector step)."""
        if self.owed < 1.0:
            return 0
        if self.env_steps_per_update:
            per_step = self.n_envs / self.env_steps_per_update
        else:
            mean_len = self.episode_steps / self.episodes if self.episodes else self.episode_limit
            per_step = self.n_envs * self.updates_per_episode / max(mean_len, 1.0)
        self.allowance = min(self.allowance + per_step, self.owed)
        n = int(self.allowance)
        n = max(n, int(self.owed - self.max_lag))
        self.allowance = max(self.allowance - n, 0.0)
        self.owed -= n
        return n

    def state_dict(self) -> dict[str, float | int]:
        return {
            "owed": self.owed,
            "allowance": self.allowance,
            "episodes": self.episodes,
            "episode_steps": self.episode_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.owed = float(state["owed"])
        self.allowance = float(state["allowance"])
        self.episodes = int(state["episodes"])
        self.episode_steps = int(state["episode_steps"])
