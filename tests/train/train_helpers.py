"""Helpers of the train tests (a uniquely named module: several test folders have a conftest)."""

from __future__ import annotations

from typing import Any


def tiny(**overrides: Any) -> dict[str, Any]:
    """The default config shrunk for fast tests (small nets, small buffer, frequent evaluation)."""
    cfg: dict[str, Any] = {
        "hidden_dim": 16,
        "mixing_embed_dim": 8,
        "hypernet_embed": 16,
        "batch_size": 8,
        "buffer_size": 2_000,
        "n_envs": 4,
        "vector": "sync",
        "eval_episodes": 4,
        "eval_interval": 10_000,
        "log_interval": 200,
        "checkpoint_interval": 0,
        "target_update_freq": 50,
    }
    cfg.update(overrides)
    return cfg


TWO_STEP_PAPER: dict[str, Any] = {
    "gamma": 0.99,
    "epsilon_start": 1.0,
    "epsilon_end": 1.0,
    "hypernet_layers": 1,
    "batch_size": 32,
    "n_envs": 8,
    "target_update_freq": 100,
    "eval_episodes": 1,  # the game is deterministic: one greedy episode is the greedy return
    "eval_interval": 10**9,
}
"""The QMIX paper's two-step game setting: uniform exploration throughout (epsilon 1)."""
