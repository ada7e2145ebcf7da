"""`make_vector_env`: an env id and a backend name in, ``n_envs`` copies stepped together out.

The one place that knows every `VectorTeamEnv` implementation: in-process (`vector`), worker
processes (`subproc_vector`), Ray actors (`ray_vector`, which imports Ray only when one is made),
simple_spread's array engine (`batched_mpe`) and VMAS's own batched worlds (`vmas_env`, which
imports VMAS and torch only when one is made). Numpy only; no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .batched_mpe import SPREAD_IDS, BatchedSimpleSpread, supports_batched_spread
from .errors import EnvError
from .ray_vector import RayVectorEnv
from .subproc_vector import SubprocVectorEnv
from .vector import EnvFactory, SyncVectorEnv, VectorTeamEnv
from .vmas_env import is_vmas_id
from .vmas_vector import VmasVectorEnv


def supports_batched(env_id: str, env_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``env_id`` with ``env_kwargs`` has a batched engine (``backend="batched"``):
    simple_spread with its default options, or any VMAS scenario."""
    return is_vmas_id(env_id) or supports_batched_spread(env_id, env_kwargs)


def make_vector_env(
    env_id: str,
    n_envs: int,
    *,
    backend: str = "sync",
    n_workers: int | None = None,
    n_agents: int = 3,
    team_reward: str = "sum",
    episode_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> VectorTeamEnv:
    """``n_envs`` copies of `make_env(env_id, ...)`; ``backend`` is ``"sync"``, ``"subproc"``,
    ``"ray"`` (Ray actors) or ``"batched"`` (every world in one call: the array engine of
    `batched_mpe` for simple_spread, VMAS's own for ``vmas:`` ids)."""
    if n_envs < 1:
        raise EnvError(f"n_envs must be a positive integer; found {n_envs}")
    if backend == "batched":
        engine: type[BatchedSimpleSpread] | type[VmasVectorEnv]
        if is_vmas_id(env_id):
            engine = VmasVectorEnv
        elif env_id in SPREAD_IDS:
            engine = BatchedSimpleSpread
        else:
            raise EnvError(
                f"the batched engines step simple_spread ({sorted(SPREAD_IDS)}) and VMAS "
                f"scenarios ('vmas:<scenario>'); found {env_id!r}. Use backend='sync' or "
                "'subproc' for other envs."
            )
        return engine(
            n_envs,
            env_id=env_id,
            n_agents=n_agents,
            team_reward=team_reward,
            episode_limit=episode_limit,
            env_kwargs=env_kwargs,
        )
    factory = EnvFactory(env_id, n_agents, team_reward, episode_limit, dict(env_kwargs or {}))
    if backend == "sync":
        return SyncVectorEnv([factory() for _ in range(n_envs)])
    if backend == "subproc":
        return SubprocVectorEnv([factory] * n_envs, n_workers=n_workers)
    if backend == "ray":
        return RayVectorEnv([factory] * n_envs, n_workers=n_workers)
    raise EnvError(f"backend must be 'sync', 'subproc', 'ray' or 'batched'; found {backend!r}")
