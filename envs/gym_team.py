"""A Gymnasium single-agent id as a team of independent copies: a sanity task, not coordination.

``CartPole-v1`` with ``n_agents=3`` becomes agents ``agent_0..agent_2``, each playing its own copy
(copy i seeded with ``seed + i``), with the team reward summed (or averaged) over the copies. Nothing
couples the copies, so QMIX has nothing to coordinate: this exists so the seed's quick start keeps
working and as a smoke test of the learning loop, and it is documented as such.

A copy that ends (terminated or truncated) leaves the team (removed from ``env.agents``, as in
PettingZoo); the team episode ends when every copy has ended. The Gymnasium ``TimeLimit``
(``max_episode_steps``) becomes the episode limit and its cut is truncation.

Implemented as a PettingZoo ``ParallelEnv`` (`GymCopiesParallelEnv`) behind the same adapter as every
other env, so masks, leaving agents and termination-vs-truncation follow one set of rules.
Supported: ``Discrete`` actions and flat (1-D) ``Box`` observations; anything else is an
`UnsupportedEnvError`. Numpy and Gymnasium/PettingZoo only; no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import EnvError, UnsupportedEnvError
from .pettingzoo_env import PettingZooTeamEnv, TeamReward
from .sim_import import INSTALL_HINT, import_sim_module

_SUPPORTED = (
    "supported: Discrete actions and flat (1-D) Box observations (read as a single-agent Gymnasium "
    "env run as n_agents independent copies, since its action space is not a Tuple of agents)"
)


def _parallel_env_base() -> type:
    return import_sim_module("pettingzoo").ParallelEnv  # type: ignore[no-any-return]


class GymCopiesParallelEnv(_parallel_env_base()):  # type: ignore[misc]
    """``n_agents`` independent copies of one Gymnasium env as a PettingZoo ParallelEnv."""

    metadata: dict[str, Any] = {"render_modes": [], "is_parallelizable": True}  # noqa: RUF012

    def __init__(
        self, gym_id: str, n_agents: int = 3, env_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        gym = import_sim_module("gymnasium")
        try:
            self.copies = [gym.make(gym_id, **dict(env_kwargs or {})) for _ in range(n_agents)]
        except gym.error.Error as e:
            raise EnvError(
                f"gymnasium could not make {gym_id!r} (a single-agent env run as independent "
                f"copies): {e}"
            ) from e
        except TypeError as e:
            raise EnvError(
                f"gymnasium {gym_id!r} rejected env_kwargs {dict(env_kwargs or {})}: {e}"
            ) from e
        first = self.copies[0]
        act, obs = first.action_space, first.observation_space
        if not isinstance(act, gym.spaces.Discrete):
            kind = "a continuous" if isinstance(act, gym.spaces.Box) else "an"
            raise UnsupportedEnvError(f"{gym_id!r} has {kind} action space {act}; {_SUPPORTED}")
        if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
            raise UnsupportedEnvError(f"{gym_id!r} has observation space {obs}; {_SUPPORTED}")
        self.gym_id = gym_id
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        spec = getattr(first, "spec", None)
        limit = getattr(spec, "max_episode_steps", None)
        if limit is not None:
            self.max_cycles = int(limit)
        self._copy = dict(zip(self.possible_agents, self.copies, strict=True))

    def observation_space(self, agent: str) -> Any:
        return self._copy[agent].observation_space

    def action_space(self, agent: str) -> Any:
        return self._copy[agent].action_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.agents = list(self.possible_agents)
        obs, infos = {}, {}
        for i, a in enumerate(self.possible_agents):
            o, info = self._copy[a].reset(seed=None if seed is None else seed + i, options=options)
            obs[a], infos[a] = np.asarray(o, dtype=np.float32), dict(info)
        return obs, infos

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = {}, {}, {}, {}, {}
        for a in self.agents:
            o, r, te, tr, info = self._copy[a].step(actions[a])
            obs[a], rewards[a] = np.asarray(o, dtype=np.float32), float(r)
            terms[a], truncs[a], infos[a] = bool(te), bool(tr), dict(info)
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    def close(self) -> None:
        for c in self.copies:
            c.close()


def make_gym_team(
    gym_id: str,
    *,
    n_agents: int = 3,
    team_reward: TeamReward = "sum",
    episode_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    env_id: str | None = None,
) -> PettingZooTeamEnv:
    """The Gymnasium env ``gym_id`` as a team of ``n_agents`` independent copies.

    ``env_id`` is the id as the user wrote it (e.g. ``"mymodule:MyEnv-v0"``), kept in the spec so
    the env can be made again; it defaults to ``gym_id``.
    """
    try:
        import_sim_module("gymnasium")
    except EnvError as e:
        raise EnvError(f"{gym_id!r} needs gymnasium: {INSTALL_HINT}") from e
    par = GymCopiesParallelEnv(gym_id, n_agents, env_kwargs)
    return PettingZooTeamEnv(
        par,
        env_id=env_id or gym_id,
        team_reward=team_reward,
        episode_limit=episode_limit,
        env_kwargs=env_kwargs,
    )
