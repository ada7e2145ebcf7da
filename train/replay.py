"""Episode replay: whole episodes in preallocated numpy arrays, sampled uniformly.

The pymarl episode batch: every episode is stored padded to ``episode_limit`` steps, with a
``filled`` mask saying which steps are real. Per-step arrays have T = episode_limit entries; per-state
arrays have T + 1 (the state after the last step is kept so a truncated episode can bootstrap).

    obs        float32 (capacity, T+1, n_agents, obs_dim)
    state      float32 (capacity, T+1, state_dim)
    avail      bool    (capacity, T+1, n_agents, n_actions)
    alive      bool    (capacity, T+1, n_agents)
    actions    int64   (capacity, T, n_agents)
    reward     float32 (capacity, T)
    terminated bool    (capacity, T)      True only at a real terminal step (never at truncation)
    filled     bool    (capacity, T)      True for the episode's real steps

The buffer is a ring over episodes, sampled uniformly with its own numpy Generator, and its whole
content (arrays, write position, size, RNG state) can be saved for an exact resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .errors import CheckpointError

EPISODE_FIELDS = ("obs", "state", "avail", "alive", "actions", "reward", "terminated", "filled")


class EpisodeBatch(NamedTuple):
    """A batch of B episodes (numpy), shapes as in the module docstring with capacity -> B."""

    obs: np.ndarray  # (B, T+1, n, obs_dim) float32
    state: np.ndarray  # (B, T+1, state_dim) float32
    avail: np.ndarray  # (B, T+1, n, n_actions) bool
    alive: np.ndarray  # (B, T+1, n) bool
    actions: np.ndarray  # (B, T, n) int64
    reward: np.ndarray  # (B, T) float32
    terminated: np.ndarray  # (B, T) bool
    filled: np.ndarray  # (B, T) bool


def empty_episodes(
    n: int, episode_limit: int, n_agents: int, obs_dim: int, state_dim: int, n_actions: int
) -> EpisodeBatch:
    """Zeroed storage for ``n`` episodes (also the collector's in-progress episodes)."""
    t = episode_limit
    return EpisodeBatch(
        obs=np.zeros((n, t + 1, n_agents, obs_dim), np.float32),
        state=np.zeros((n, t + 1, state_dim), np.float32),
        avail=np.zeros((n, t + 1, n_agents, n_actions), bool),
        alive=np.zeros((n, t + 1, n_agents), bool),
        actions=np.zeros((n, t, n_agents), np.int64),
        reward=np.zeros((n, t), np.float32),
        terminated=np.zeros((n, t), bool),
        filled=np.zeros((n, t), bool),
    )


class EpisodeReplay:
    """A ring buffer of ``capacity`` episodes with uniform sampling."""

    def __init__(
        self,
        capacity: int,
        episode_limit: int,
        n_agents: int,
        obs_dim: int,
        state_dim: int,
        n_actions: int,
        rng: np.random.Generator,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1 episode; found {capacity}")
        self.capacity = capacity
        self.episode_limit = episode_limit
        self.data = empty_episodes(capacity, episode_limit, n_agents, obs_dim, state_dim, n_actions)
        self.rng = rng
        self.pos = 0  # next slot to write
        self.size = 0  # episodes stored

    def __len__(self) -> int:
        return self.size

    def add(self, episodes: EpisodeBatch, rows: np.ndarray | list[int]) -> None:
        """Copy episodes ``rows`` of ``episodes`` (same T and sizes) into the ring."""
        all_rows = np.asarray(rows, dtype=np.int64)
        k = all_rows.size
        if k == 0:
            return
        src = all_rows[-self.capacity :]  # more than fit: the last ones, where a loop leaves them
        slots = (self.pos + k - src.size + np.arange(src.size)) % self.capacity
        for name, dst in zip(EPISODE_FIELDS, self.data, strict=True):
            dst[slots] = getattr(episodes, name)[src]  # one array copy per field
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def sample(self, batch_size: int) -> EpisodeBatch:
        """``batch_size`` distinct episodes drawn uniformly, trimmed to the longest one's length."""
        if batch_size > self.size:
            raise ValueError(
                f"cannot sample {batch_size} episodes from a buffer holding {self.size}"
            )
        idx = np.sort(self.rng.choice(self.size, size=batch_size, replace=False))
        filled = self.data.filled[idx]  # (B, T)
        # Trimming to the longest sampled episode saves work on envs with short episodes.
        used = np.flatnonzero(filled.any(axis=0))
        t_max = int(used[-1]) + 1 if used.size else 1
        d = self.data
        return EpisodeBatch(
            obs=d.obs[idx, : t_max + 1],
            state=d.state[idx, : t_max + 1],
            avail=d.avail[idx, : t_max + 1],
            alive=d.alive[idx, : t_max + 1],
            actions=d.actions[idx, :t_max],
            reward=d.reward[idx, :t_max],
            terminated=d.terminated[idx, :t_max],
            filled=filled[:, :t_max],
        )

    # --- persistence (no pickles: plain arrays in .npz, RNG state as JSON-able dict) -----------
    def state_dict(self) -> dict[str, Any]:
        """Counters and RNG state (JSON-able); the arrays are saved by `save_arrays`."""
        return {
            "pos": self.pos,
            "size": self.size,
            "capacity": self.capacity,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise CheckpointError(
                f"checkpoint replay holds {state['capacity']} episodes but this run's buffer holds "
                f"{self.capacity}; resume with the run's saved config"
            )
        self.pos = int(state["pos"])
        self.size = int(state["size"])
        self.rng.bit_generator.state = state["rng"]

    def save_arrays(self, f: BinaryIO) -> None:
        """Write the stored episodes (only the first ``size`` slots) as an uncompressed .npz."""
        n = self.size
        np.savez(f, **{k: getattr(self.data, k)[:n] for k in EPISODE_FIELDS})

    def load_arrays(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            for name in EPISODE_FIELDS:
                arr = z[name]
                dst = getattr(self.data, name)
                if arr.shape[1:] != dst.shape[1:] or arr.shape[0] > self.capacity:
                    raise CheckpointError(
                        f"replay array {name!r} in {path} has shape {arr.shape}; expected "
                        f"(<= {self.capacity}, {', '.join(map(str, dst.shape[1:]))})"
                    )
                dst[: arr.shape[0]] = arr
