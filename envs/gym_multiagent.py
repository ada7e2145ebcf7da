"""Gymnasium multi-agent envs in EPyMARL's convention as team envs (lbforaging, rware and their kind).

EPyMARL's "gymma" envs are ordinary Gymnasium envs that hold a whole team: the observation and
action spaces are ``Tuple``s with one entry per agent, ``reset`` returns a tuple of observations,
``step`` takes a sequence of actions and returns a list of per-agent rewards (or one shared reward),
a ``done`` flag for the team (or one per agent), ``truncated`` and ``info``; the team size is
``env.unwrapped.n_agents`` (else the length of the Tuple). Level-based foraging
(``lbforaging:Foraging-8x8-2p-2f-coop-v3``) and the multi-robot warehouse
(``rware:rware-tiny-2ag-v2``) are the best-known; importing their package registers their ids.

`GymMultiAgentParallelEnv` presents such an env as a PettingZoo ``ParallelEnv`` (agents
``agent_0..agent_{n-1}``), so the one adapter (`PettingZooTeamEnv`) applies the team rules:

- **Team reward**: the per-agent rewards summed (default) or averaged. A single shared reward (a
  number, not a list) is every agent's reward, as in PettingZoo's cooperative envs.
- **Global state**: the concatenated observations (these envs have no ``state()``).
- **Observations**: any ``Box`` per agent, flattened (C order) as EPyMARL's ``FlattenObservation``.
- **Actions**: ``Discrete`` per agent; ``MultiDiscrete`` (rware with message bits) is unsupported.
- **Action masks** where the env offers them: ``info["action_mask"]`` (or ``"action_masks"``)
  holding one mask per agent; otherwise every action is available (lbforaging and rware turn an
  impossible move into a no-op themselves, as under EPyMARL).
- **Time limit** from the env's registration: ``max_episode_steps`` of the registration, else the
  env constructor's own limit among the registration's kwargs (lbforaging's ``max_episode_steps``:
  50, rware's ``max_steps``: 500); ``env_kwargs`` may set that kwarg to change it. Both packages end
  an episode at their own limit with ``done=True``, which would read as a real terminal; so the env
  is built with its own limit one step later and the adapter cuts the episode at the limit as a
  *truncation* (bootstrapped). An env that empties its food (lbforaging) still terminates.
- **Seeding**: a seeded ``reset`` starts from a newly made env, so the episode is a function of the
  seed and the actions alone (lbforaging's respawn otherwise depends on where the previous
  episode's players stood).
- **Team end**: a single ``done`` ends every agent; a list of per-agent flags ends each agent on its
  own (it leaves the team, as in PettingZoo). ``truncated`` works the same way.

Numpy and Gymnasium only (imported on demand); no torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import EnvError, UnsupportedEnvError
from .pettingzoo_env import PettingZooTeamEnv, TeamReward
from .sim_import import import_sim_module

logger = logging.getLogger(__name__)

KIND = "a Gymnasium multi-agent env (Tuple spaces, EPyMARL's convention)"
"""How errors name this reading of a Gymnasium id."""

LIMIT_KWARGS = ("max_episode_steps", "max_steps")
"""Constructor kwargs in a registration that are the env's own episode length (lbforaging, rware)."""

_MASK_KEYS = ("action_mask", "action_masks")


def is_multiagent(env: Any) -> bool:
    """Whether a made Gymnasium env speaks EPyMARL's convention (a Tuple action space)."""
    return type(getattr(env, "action_space", None)).__name__ == "Tuple"


def _parallel_env_base() -> type:
    return import_sim_module("pettingzoo").ParallelEnv  # type: ignore[no-any-return]


def _limits(registration: Any, env_kwargs: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(episode limit, the constructor kwarg that holds the env's own limit or None).

    The env's own limit is one of `LIMIT_KWARGS` among the registration's kwargs (``env_kwargs``
    overrides it); Gymnasium's ``TimeLimit`` (the registration's ``max_episode_steps``, or
    ``env_kwargs["max_episode_steps"]`` when that is not the constructor's) may cut earlier.
    """
    registered = dict(registration.kwargs or {})
    own_name = next((n for n in LIMIT_KWARGS if n in registered), None)
    limits: list[int] = []
    if own_name is not None:
        limits.append(env_kwargs.get(own_name, registered[own_name]))
    time_limit = registration.max_episode_steps
    if own_name != "max_episode_steps":
        time_limit = env_kwargs.get("max_episode_steps", time_limit)
    if time_limit is not None:
        limits.append(time_limit)
    for value in limits:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EnvError(
                f"{registration.id!r}: the episode limit must be a positive number of env steps; "
                f"found {value!r}"
            )
    return (min(limits) if limits else None), own_name


class GymMultiAgentParallelEnv(_parallel_env_base()):  # type: ignore[misc]
    """One Gymnasium multi-agent env (EPyMARL's convention) as a PettingZoo ParallelEnv.

    Args:
        gym_id: the registered Gymnasium id (without any ``module:`` prefix).
        env_kwargs: keyword arguments for ``gymnasium.make``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "is_parallelizable": True}  # noqa: RUF012

    def __init__(self, gym_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
        gym = import_sim_module("gymnasium")
        kwargs = dict(env_kwargs or {})
        try:
            registration = gym.spec(gym_id)
        except gym.error.Error as e:
            raise EnvError(f"gymnasium has no registered id {gym_id!r}: {e}") from e
        limit, own_name = _limits(registration, kwargs)
        if own_name is not None:
            # The env's own cut would be reported as done (a terminal); ours comes first, as
            # truncation. Set in the spec's kwargs: gym.make reads a max_episode_steps keyword
            # as its own TimeLimit, not as the constructor's.
            kwargs.pop(own_name, None)
            ctor = {**registration.kwargs, own_name: int(limit or 0) + 1}
            registration = dataclasses.replace(registration, kwargs=ctor)
        self._registration, self._make_kwargs = registration, kwargs
        self._fresh = True  # made and never reset
        try:
            self.env = gym.make(registration, disable_env_checker=True, **kwargs)
        except gym.error.Error as e:
            raise EnvError(f"gymnasium could not make {gym_id!r} ({KIND}): {e}") from e
        except TypeError as e:
            raise EnvError(
                f"{gym_id!r} ({KIND}) rejected env_kwargs {dict(env_kwargs or {})}: {e}"
            ) from e
        self.gym_id = gym_id
        act, obs = self.env.action_space, self.env.observation_space
        if not is_multiagent(self.env) or type(obs).__name__ != "Tuple":
            self.env.close()
            raise UnsupportedEnvError(
                f"{gym_id!r} read as {KIND} needs Tuple observation and action spaces; found "
                f"observation space {obs} and action space {act}"
            )
        declared = getattr(self.env.unwrapped, "n_agents", None)
        n = int(declared) if isinstance(declared, int | np.integer) else len(act.spaces)
        if not (len(act.spaces) == len(obs.spaces) == n):
            self.env.close()
            raise UnsupportedEnvError(
                f"{gym_id!r} ({KIND}): expected n_agents={n} entries in both Tuple spaces; found "
                f"{len(obs.spaces)} observation and {len(act.spaces)} action spaces"
            )
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents: list[str] = []
        self._obs_spaces: dict[str, Any] = {}
        self._act_spaces: dict[str, Any] = {}
        for i, a in enumerate(self.possible_agents):
            o, u = obs.spaces[i], act.spaces[i]
            if type(o).__name__ != "Box":
                self.env.close()
                raise UnsupportedEnvError(
                    f"{gym_id!r} ({KIND}): agent {i}'s observation space is {o}; supported: Box "
                    "(flattened). Choose the env's flat-vector observation variant."
                )
            if type(u).__name__ != "Discrete":
                self.env.close()
                raise UnsupportedEnvError(
                    f"{gym_id!r} ({KIND}): agent {i}'s action space is {u}; supported: Discrete "
                    "(rware with message bits has MultiDiscrete actions: set msg_bits to 0)"
                )
            self._obs_spaces[a] = gym.spaces.flatten_space(o)
            self._act_spaces[a] = u
        if limit is not None:
            self.max_cycles = limit

    def observation_space(self, agent: str) -> Any:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> Any:
        return self._act_spaces[agent]

    def _per_agent_obs(self, obs: Any) -> dict[str, np.ndarray]:
        if len(obs) != len(self.possible_agents):
            raise EnvError(
                f"{self.gym_id!r}: expected {len(self.possible_agents)} observations (one per agent); "
                f"found {len(obs)}"
            )
        return {
            a: np.asarray(o, dtype=np.float32).reshape(-1)
            for a, o in zip(self.possible_agents, obs, strict=True)
        }

    def _per_agent_infos(self, info: Any) -> dict[str, dict[str, Any]]:
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.possible_agents}
        if not isinstance(info, Mapping):
            return infos
        for key in _MASK_KEYS:
            masks = info.get(key)
            if masks is None:
                continue
            if len(masks) != len(self.possible_agents):
                raise EnvError(
                    f"{self.gym_id!r}: info[{key!r}] must hold one action mask per agent "
                    f"({len(self.possible_agents)}); found {len(masks)}"
                )
            for a, m in zip(self.possible_agents, masks, strict=True):
                infos[a]["action_mask"] = np.asarray(m, dtype=bool)
            break
        return infos

    def _per_agent_flags(self, flag: Any, what: str) -> dict[str, bool]:
        if isinstance(flag, Sequence | np.ndarray) and not isinstance(flag, str):
            flags = [bool(x) for x in flag]
            if len(flags) != len(self.possible_agents):
                raise EnvError(
                    f"{self.gym_id!r}: expected one {what} flag per agent "
                    f"({len(self.possible_agents)}) or one for the team; found {len(flags)}"
                )
            return dict(zip(self.possible_agents, flags, strict=True))
        return dict.fromkeys(self.possible_agents, bool(flag))

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None and not self._fresh:
            # A seeded episode must be a function of the seed alone; lbforaging's respawn avoids
            # the previous episode's player positions, so start from a newly made env (< 1 ms).
            self.env.close()
            gym = import_sim_module("gymnasium")
            self.env = gym.make(self._registration, disable_env_checker=True, **self._make_kwargs)
        self._fresh = False
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return self._per_agent_obs(obs), self._per_agent_infos(info)

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        # Agents that left the team still need an entry in the joint action: 0 (never used by us).
        joint = [int(actions.get(a, 0)) for a in self.possible_agents]
        obs, reward, done, truncated, info = self.env.step(joint)
        if isinstance(reward, Sequence | np.ndarray):
            values = [float(r) for r in reward]
            if len(values) != len(self.possible_agents):
                raise EnvError(
                    f"{self.gym_id!r}: expected one reward per agent ({len(self.possible_agents)}) "
                    f"or one shared reward; found {len(values)}"
                )
        else:
            values = [float(reward)] * len(self.possible_agents)
        all_obs = self._per_agent_obs(obs)
        all_infos = self._per_agent_infos(info)
        terms = self._per_agent_flags(done, "done")
        truncs = self._per_agent_flags(truncated, "truncated")
        live = self.agents
        out_obs = {a: all_obs[a] for a in live}
        rewards = {a: values[i] for i, a in enumerate(self.possible_agents) if a in live}
        infos = {a: all_infos[a] for a in live}
        terms = {a: terms[a] for a in live}
        truncs = {a: truncs[a] for a in live}
        self.agents = [a for a in live if not (terms[a] or truncs[a])]
        return out_obs, rewards, terms, truncs, infos

    def close(self) -> None:
        self.env.close()


def make_gym_multiagent_team(
    gym_id: str,
    *,
    team_reward: TeamReward = "sum",
    episode_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    env_id: str | None = None,
) -> PettingZooTeamEnv:
    """The Gymnasium multi-agent env ``gym_id`` as a team (see the module docstring).

    ``env_id`` is the id as the user wrote it (e.g. ``"lbforaging:Foraging-8x8-2p-2f-coop-v3"``),
    kept in the spec so the env can be made again (the module part registers the id); it defaults
    to ``gym_id``.
    """
    par = GymMultiAgentParallelEnv(gym_id, env_kwargs)
    return PettingZooTeamEnv(
        par,
        env_id=env_id or gym_id,
        team_reward=team_reward,
        episode_limit=episode_limit,
        env_kwargs=env_kwargs,
    )


def make_gymnasium_team(
    gym_id: str,
    *,
    n_agents: int = 3,
    team_reward: TeamReward = "sum",
    episode_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    env_id: str | None = None,
) -> PettingZooTeamEnv:
    """A registered Gymnasium id as a team, whichever of the two readings its spaces call for.

    A Tuple action space (EPyMARL's multi-agent convention) makes a team of the env's own agents
    (``n_agents`` does not apply); any other env is a single-agent task run as ``n_agents``
    independent copies (`gym_team`). The env is made once to look at its spaces.
    """
    gym = import_sim_module("gymnasium")
    kwargs = dict(env_kwargs or {})
    try:
        probe = gym.make(gym_id, disable_env_checker=True, **kwargs)
    except (gym.error.Error, TypeError, ValueError) as e:
        why = (
            "rejected env_kwargs"
            if isinstance(e, TypeError | ValueError)
            else "could not be made with"
        )
        raise EnvError(
            f"gymnasium {gym_id!r} {why} {kwargs} (made once to see whether it is {KIND} or a "
            f"single-agent env run as n_agents independent copies): {e}"
        ) from e
    multiagent = is_multiagent(probe)
    probe.close()
    if multiagent:
        team = make_gym_multiagent_team(
            gym_id,
            team_reward=team_reward,
            episode_limit=episode_limit,
            env_kwargs=kwargs,
            env_id=env_id,
        )
        if team.spec.n_agents != n_agents:
            logger.info(
                "%s is %s with %d agents; n_agents=%d does not apply",
                env_id or gym_id,
                KIND,
                team.spec.n_agents,
                n_agents,
            )
        return team
    from .gym_team import make_gym_team

    return make_gym_team(
        gym_id,
        n_agents=n_agents,
        team_reward=team_reward,
        episode_limit=episode_limit,
        env_kwargs=kwargs,
        env_id=env_id,
    )
