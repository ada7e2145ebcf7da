"""The environments of a training run: which engine steps the training envs, and making them.

`choose_vector_kind` resolves ``TrainConfig.vector`` (``auto``: a batched engine where one applies,
simple_spread's array engine or VMAS's own, worker processes for envs costly enough to pay for the
pipes, else in-process; with ``overlap`` on, in-process inside the collector process);
`make_train_envs` and `make_eval_envs` build the vector envs. Worker processes are
`SubprocVectorEnv`'s to start, watch and stop: the trainer only closes what it made.
"""

from __future__ import annotations

import os
import sys

from qmix_edge.envs import (
    EnvSpec,
    SubprocVectorEnv,
    SyncVectorEnv,
    VectorTeamEnv,
    is_vmas_id,
    make_vector_env,
    supports_batched,
)
from qmix_edge.envs.vector import EnvFactory

from .config import TrainConfig
from .errors import ConfigError

SMALL_BUILTIN_ENVS = frozenset(
    {"two_step", "penalty", "masked_choice", "leaving_agents", "speaker_pair"}
)
"""Envs so cheap to step that worker processes would only add pipe overhead."""
MAX_EVAL_ENVS = 32


def choose_vector_kind(config: TrainConfig) -> str:
    """The engine that steps the training envs: ``config.vector``, with ``auto`` resolved."""
    cfg = config
    if cfg.vector == "batched" and not supports_batched(cfg.env, cfg.env_kwargs):
        raise ConfigError(
            f"vector='batched' steps simple_spread (with its default options) and VMAS scenarios "
            f"only; found env {cfg.env!r} with env_kwargs {dict(cfg.env_kwargs)}. Use "
            "vector='auto', 'sync' or 'subprocess'."
        )
    if cfg.overlap and cfg.vector in ("subprocess", "ray"):
        raise ConfigError(
            f"overlap steps the training envs inside the collector process, so it needs an "
            f"in-process engine; found vector={cfg.vector!r}. Use vector='auto', 'batched' or "
            "'sync', or turn overlap off to step the envs in worker processes."
        )
    if cfg.vector != "auto":
        return cfg.vector
    if supports_batched(cfg.env, cfg.env_kwargs):
        return "batched"
    if cfg.overlap:
        return "sync"
    if cfg.n_envs >= 2 and (os.cpu_count() or 1) >= 2 and cfg.env not in SMALL_BUILTIN_ENVS:
        return "subprocess"
    return "sync"


def env_factory(config: TrainConfig) -> EnvFactory:
    """The picklable recipe of one env of the run."""
    return EnvFactory(
        config.env,
        config.n_agents,
        config.team_reward,
        config.episode_limit,
        dict(config.env_kwargs),
    )


def batched_envs(config: TrainConfig, n: int) -> VectorTeamEnv:
    """``n`` worlds of the run's env in its batched engine (simple_spread's or VMAS's)."""
    return make_vector_env(
        config.env,
        n,
        backend="batched",
        n_agents=config.n_agents,
        team_reward=config.team_reward,
        episode_limit=config.episode_limit,
        env_kwargs=dict(config.env_kwargs),
    )


def make_train_envs(config: TrainConfig, kind: str, spec: EnvSpec) -> VectorTeamEnv:
    """``config.n_envs`` training envs stepped by engine ``kind`` (see `choose_vector_kind`)."""
    n = config.n_envs
    if kind == "batched":
        venv = batched_envs(config, n)
        if venv.spec != spec:  # a guard: the two engines must describe one env
            venv.close()
            raise ConfigError(
                f"the batched engine's spec {venv.spec} differs from the env's {spec}; "
                "train with vector='sync'"
            )
        return venv
    factory = env_factory(config)
    if kind == "sync":
        return SyncVectorEnv([factory() for _ in range(n)])
    if kind == "ray":
        from qmix_edge.envs.ray_vector import RayVectorEnv

        return RayVectorEnv([factory] * n)
    # fork (Linux) rather than spawn: spawn re-imports __main__, which breaks the quick-start
    # script shape (no `if __name__ == "__main__"` guard). The workers run only numpy code and are
    # made before any background thread (TensorBoard) exists.
    context = "fork" if sys.platform.startswith("linux") else "spawn"
    return SubprocVectorEnv([factory] * n, n_workers=1, context=context)


def make_eval_envs(config: TrainConfig) -> VectorTeamEnv:
    """In-process envs for greedy evaluation: the env's own implementation (mpe2 for simple_spread,
    never its array copy); for VMAS that is its batched worlds."""
    n = min(config.eval_episodes, MAX_EVAL_ENVS)
    if is_vmas_id(config.env):
        return batched_envs(config, n)
    factory = env_factory(config)
    return SyncVectorEnv([factory() for _ in range(n)])
