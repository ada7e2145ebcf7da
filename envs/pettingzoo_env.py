"""The PettingZoo Parallel API seen as a `TeamEnv`: fixed agent order, padded arrays, team reward.

Owns the translation from any `pettingzoo.ParallelEnv` (mpe2's scenarios, the built-in toy envs,
Gymnasium copies, a user's own env) to the contract of `qmix_edge.envs.spec`. Numpy only; PettingZoo
itself is never imported here (the adapter relies on the Parallel API's duck type), so this module
is cheap to import and never pulls torch in.

The rules, in one place:

- **Agent order** is ``env.possible_agents``. An agent not in ``env.agents`` (not yet joined, or left
  the episode) is not ``alive``: zero observation, only action 0 available (a placeholder the env
  never receives).
- **Observations** must be flat (1-D ``Box``), or a dict ``{"observation": Box, "action_mask": ...}``
  (PettingZoo's action-mask convention). They are cast to float32 and zero-padded to the largest
  agent's size.
- **Action masks** come from the dict observation's ``action_mask`` or, failing that, from
  ``info[agent]["action_mask"]``; without either, all of an agent's own actions are available. A
  live agent whose mask allows nothing gets action 0 as a placeholder (logged once per episode): the
  env receives 0, as PettingZoo's turn-based envs expect of an agent that cannot act.
- **Actions** must be ``Discrete`` (``Discrete(n, start=k)`` is supported: index i is sent as k + i).
- **Global state** is ``env.state()`` when the env implements it, else the concatenation of every
  possible agent's true observation in agent order (zeros for agents not present).
- **Team reward** is the sum (default) or the mean of the agents' rewards. The mean divides by the
  number of *possible* agents, not the number still present, so the reward's scale does not jump when
  an agent leaves.
- **Episode limit**: the env's own ``max_cycles`` (or ``max_episode_steps``) when it declares one,
  else the ``episode_limit`` argument (then required); when both are known the smaller wins. Reaching
  the limit ends the episode as ``truncated`` even if the env itself would go on.
- **Termination vs truncation**: the episode is over when no agent is left (or at the limit). It is
  ``truncated`` (bootstrap) when our limit cut it, or when at least one agent that ended on the last
  step ended by truncation alone (a time-limit cut of agents that could have gone on); it is
  ``terminated`` (no bootstrap) only when every agent that ended on the last step ended by
  termination. An agent with both flags set counts as terminated (Gymnasium's precedence).
- **The final step**: when the episode ends, ``StepResult.next`` still carries the final
  observation, mask and ``alive=True`` of every agent that acted on that step (PettingZoo returns
  them), so a truncated episode can bootstrap from a well-formed state. Mid-episode leavers get the
  placeholder treatment from the next step on.
- **Seeding**: ``reset(seed)`` forwards the seed to ``env.reset(seed=...)``; with a seed, the episode
  is a deterministic function of the seed and the actions.
- **mpe2 speed-ups** (same results, checked step by step by the tests): mpe2's discrete scenarios
  are stepped through their own AEC ``step`` instead of PettingZoo's AEC-to-parallel wrapper
  (`_Mpe2DirectStepper`; ``fast_mpe2=False`` turns it off), and their ``state()``, which is by
  definition the concatenated observations, is built from the observations the step returned.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from .base import TeamEnv
from .errors import EnvError, UnsupportedEnvError
from .spec import AgentSpec, EnvSpec, StepResult, TeamStep

logger = logging.getLogger(__name__)

TeamReward = Literal["sum", "mean"]
TEAM_REWARDS: tuple[str, ...] = ("sum", "mean")

_SUPPORTED = (
    "supported: discrete actions (gymnasium.spaces.Discrete) and flat observations (a 1-D Box, or a "
    'dict {"observation": 1-D Box, "action_mask": ...})'
)


def _space(env: Any, kind: str, agent: str) -> Any:
    """``env.observation_space(agent)`` / ``env.action_space(agent)``, or the older dict attributes."""
    method = getattr(env, kind, None)
    if callable(method):
        return method(agent)
    table = getattr(env, kind + "s", None)
    if isinstance(table, Mapping) and agent in table:
        return table[agent]
    raise UnsupportedEnvError(
        f"expected the env to declare {kind}(agent) (PettingZoo Parallel API); found neither "
        f"{kind}() nor {kind}s[{agent!r}] on {type(env).__name__}"
    )


def _is_box(space: Any) -> bool:
    return type(space).__name__ == "Box" and hasattr(space, "shape")


def _is_discrete(space: Any) -> bool:
    return type(space).__name__ == "Discrete" and hasattr(space, "n")


def _describe(space: Any) -> str:
    return f"{type(space).__name__} {space}"


def observation_layout(agent: str, space: Any) -> tuple[int, bool]:
    """(flat observation length, whether the observation is a dict carrying an action mask)."""
    has_mask = False
    if type(space).__name__ == "Dict":
        keys = set(space.spaces)
        if "observation" not in keys:
            raise UnsupportedEnvError(
                f"agent {agent!r}: found a dict observation space with keys {sorted(keys)}; "
                f"{_SUPPORTED}. Flatten it with a wrapper before passing it in."
            )
        has_mask = "action_mask" in keys
        space = space.spaces["observation"]
    if not _is_box(space):
        raise UnsupportedEnvError(
            f"agent {agent!r}: found observation space {_describe(space)}; {_SUPPORTED}"
        )
    if len(space.shape) != 1:
        raise UnsupportedEnvError(
            f"agent {agent!r}: found a non-flat observation of shape {space.shape}; {_SUPPORTED}. "
            "Flatten it with a wrapper (e.g. supersuit's flatten_v0) first."
        )
    return int(space.shape[0]), has_mask


def action_layout(agent: str, space: Any) -> tuple[int, int]:
    """(number of actions, index offset ``start``) of a Discrete action space."""
    if _is_box(space):
        raise UnsupportedEnvError(
            f"agent {agent!r}: found a continuous action space {_describe(space)}; QMIX needs "
            f"discrete actions ({_SUPPORTED}). For mpe2 pass env_kwargs={{'continuous_actions': False}}."
        )
    if not _is_discrete(space):
        raise UnsupportedEnvError(
            f"agent {agent!r}: found action space {_describe(space)}; {_SUPPORTED}"
        )
    return int(space.n), int(getattr(space, "start", 0))


def true_observation(raw: Any, obs_dim: int, agent: str) -> np.ndarray:
    """An agent's own flat float32 observation from what the env returned (dict or array)."""
    if isinstance(raw, Mapping):
        raw = raw["observation"]
    flat = np.asarray(raw, dtype=np.float32).reshape(-1)
    if flat.shape[0] != obs_dim:
        raise EnvError(
            f"agent {agent!r}: expected an observation of length {obs_dim} (its observation space); "
            f"found length {flat.shape[0]}"
        )
    return flat


def action_mask(raw_obs: Any, info: Any, n_actions: int, agent: str) -> np.ndarray | None:
    """An agent's bool mask over its own actions, from the dict observation or ``info``; None if absent."""
    mask = None
    if isinstance(raw_obs, Mapping) and "action_mask" in raw_obs:
        mask = raw_obs["action_mask"]
    elif isinstance(info, Mapping) and info.get("action_mask") is not None:
        mask = info["action_mask"]
    if mask is None:
        return None
    m = np.asarray(mask).reshape(-1).astype(bool)
    if m.shape[0] != n_actions:
        raise EnvError(
            f"agent {agent!r}: expected an action mask of length {n_actions} (its action count); "
            f"found length {m.shape[0]}"
        )
    return m


def _episode_limit_of(env: Any) -> int | None:
    """The env's own episode length when it declares one (mpe2's ``max_cycles`` and the like)."""
    for obj in (env, getattr(env, "unwrapped", None), getattr(env, "env", None)):
        if obj is None:
            continue
        for name in ("max_cycles", "max_episode_steps", "max_steps"):
            value = getattr(obj, name, None)
            if isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0:
                return int(value)
    return None


def _state_is_concatenated_observations(env: Any) -> bool:
    """Whether ``env.state()`` is mpe2's, which is by definition all agents' observations concatenated.

    Then the state is built from the observations the step already returned instead of computing
    every observation a second time (a third of mpe2's step cost). Checked once against a real
    ``env.state()`` at construction.
    """
    module = sys.modules.get("mpe2._mpe_utils.simple_env")
    base = getattr(module, "SimpleEnv", None)
    raw = getattr(env, "unwrapped", env)
    return base is not None and isinstance(raw, base) and type(raw).state is base.state


class _Mpe2DirectStepper:
    """Steps an mpe2 scenario through its own AEC ``step``, skipping the AEC-to-parallel wrapper.

    PettingZoo's ``aec_to_parallel_wrapper`` calls ``last()`` (a full observation) before every
    agent's action and goes through two wrappers' ``__getattr__`` per access; that is half of
    simple_spread's step time. This does exactly what the wrapper does, in the same order, on the
    raw env: one AEC ``step`` per live agent, then the observations of the agents still listed,
    then the dead-agent steps that remove finished agents. The test suite checks it against the
    wrapper step for step.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    @property
    def agents(self) -> list[str]:
        return self.raw.agents  # type: ignore[no-any-return]

    def step(self, actions: Mapping[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        raw = self.raw
        for agent in list(raw.agents):
            if agent != raw.agent_selection:
                raise EnvError(
                    f"mpe2 direct stepping expected agent {agent!r} to act next; found "
                    f"{raw.agent_selection!r}. Construct the env with fast_mpe2=False."
                )
            raw.step(actions[agent])
        rewards = {a: raw.rewards[a] for a in raw.agents}
        terms, truncs, infos = dict(raw.terminations), dict(raw.truncations), dict(raw.infos)
        obs = {a: raw.observe(a) for a in raw.agents}
        while raw.agents and (
            raw.terminations[raw.agent_selection] or raw.truncations[raw.agent_selection]
        ):
            raw.step(None)
        return obs, rewards, terms, truncs, infos


def _mpe2_direct_stepper(env: Any) -> _Mpe2DirectStepper | None:
    """A direct stepper when ``env`` is mpe2's discrete SimpleEnv behind PettingZoo's wrapper."""
    module = sys.modules.get("mpe2._mpe_utils.simple_env")
    base = getattr(module, "SimpleEnv", None)
    raw = getattr(env, "unwrapped", None)
    if (
        base is None
        or raw is None
        or not isinstance(raw, base)
        or type(raw).step is not base.step
        or getattr(raw, "continuous_actions", True)
        or type(env).__name__ != "aec_to_parallel_wrapper"
    ):
        return None
    return _Mpe2DirectStepper(raw)


class PettingZooTeamEnv(TeamEnv):
    """A PettingZoo ``ParallelEnv`` as a team environment (see the module docstring for the rules).

    Args:
        env: the ParallelEnv (not yet reset; the adapter resets it once to probe ``state()``).
        env_id: the id it was made from, recorded in the spec.
        team_reward: ``"sum"`` or ``"mean"`` of the agents' rewards.
        episode_limit: max env steps per episode (required when the env declares none).
        env_kwargs: the kwargs the env was made with, recorded in the spec so it can be remade.
        fast_mpe2: step mpe2 scenarios directly (identical results; see the module docstring).
    """

    def __init__(
        self,
        env: Any,
        *,
        env_id: str,
        team_reward: TeamReward = "sum",
        episode_limit: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        fast_mpe2: bool = True,
    ) -> None:
        if team_reward not in TEAM_REWARDS:
            raise EnvError(f"team_reward must be one of {TEAM_REWARDS}; found {team_reward!r}")
        if hasattr(env, "agent_iter") or not hasattr(env, "possible_agents"):
            raise UnsupportedEnvError(
                f"{env_id!r}: expected a PettingZoo ParallelEnv; found {type(env).__name__}"
                + (" (an AEC env)" if hasattr(env, "agent_iter") else "")
                + ". Pass the parallel version (e.g. module:parallel_env) or wrap it with "
                "pettingzoo.utils.conversions.aec_to_parallel."
            )
        self.env = env
        # mpe2 scenarios are stepped directly (same results, twice as fast); see _Mpe2DirectStepper.
        self._stepper: Any = (_mpe2_direct_stepper(env) if fast_mpe2 else None) or env
        self.team_reward: TeamReward = team_reward
        self.agent_ids: tuple[str, ...] = tuple(env.possible_agents)
        if not self.agent_ids:
            raise UnsupportedEnvError(f"{env_id!r}: the env declares no possible_agents")
        self._index = {a: i for i, a in enumerate(self.agent_ids)}

        agents, offsets, dict_masks = [], [], False
        for a in self.agent_ids:
            obs_dim, has_mask = observation_layout(a, _space(env, "observation_space", a))
            n_actions, start = action_layout(a, _space(env, "action_space", a))
            agents.append(AgentSpec(a, obs_dim, n_actions))
            offsets.append(start)
            dict_masks |= has_mask
        self._action_offsets = np.asarray(offsets, dtype=np.int64)
        self._obs_dims = [s.obs_dim for s in agents]
        self._n_actions = [s.n_actions for s in agents]

        declared = _episode_limit_of(env)
        if declared is None and episode_limit is None:
            raise EnvError(
                f"{env_id!r}: the env declares no episode length (no max_cycles); pass "
                "episode_limit=<max env steps per episode> so episodes are cut (as truncation)."
            )
        if episode_limit is not None and episode_limit < 1:
            raise EnvError(
                f"episode_limit must be a positive number of env steps; found {episode_limit}"
            )
        if declared is not None and episode_limit is not None and episode_limit > declared:
            logger.warning(
                "%s: episode_limit=%d exceeds the env's own limit %d; using %d (raise the env's "
                "max_cycles in env_kwargs to lengthen episodes)",
                env_id,
                episode_limit,
                declared,
                declared,
            )
        limits = [x for x in (declared, episode_limit) if x is not None]
        limit = min(limits)

        # One probe reset: whether env.state() works and whether masks come through `info`.
        obs, infos = self._reset_env(None)
        self._live: set[str] = set(env.agents)
        self._has_state = True
        self._state_from_obs = False
        try:
            state = np.asarray(env.state(), dtype=np.float32).reshape(-1)
            state_dim = int(state.shape[0])
        except (NotImplementedError, AttributeError, TypeError):
            self._has_state = False
            state_dim = sum(s.obs_dim for s in agents)
        else:
            if _state_is_concatenated_observations(env) and set(obs) >= set(self.agent_ids):
                concat = np.concatenate(
                    [
                        true_observation(obs[a], s.obs_dim, a)
                        for a, s in zip(self.agent_ids, agents, strict=True)
                    ]
                )
                self._state_from_obs = bool(np.array_equal(concat, state))
        info_masks = any(
            isinstance(infos.get(a), Mapping) and infos[a].get("action_mask") is not None
            for a in self.agent_ids
        )
        self.spec = EnvSpec(
            env_id=env_id,
            agents=tuple(agents),
            state_dim=state_dim,
            episode_limit=limit,
            has_action_masks=dict_masks or info_masks,
            env_kwargs=dict(env_kwargs or {}),
        )
        self._t = 0
        self._over = True
        self._current = self._team_step(obs, infos, self._live)
        logger.debug("made %s: %s", env_id, self.spec)

    # -- helpers -------------------------------------------------------------------------------

    def _reset_env(self, seed: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        out = self.env.reset(seed=seed)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise UnsupportedEnvError(
                "expected env.reset() to return (observations, infos) (PettingZoo >= 1.24); "
                f"found {type(out).__name__}"
            )
        obs, infos = out
        return dict(obs), dict(infos or {})

    def _team_step(
        self, raw_obs: Mapping[str, Any], infos: Mapping[str, Any], live: set[str]
    ) -> TeamStep:
        """Build the padded arrays; the agents in ``live`` (with an observation) are alive."""
        n = len(self.agent_ids)
        dims, acts = self._obs_dims, self._n_actions
        obs = np.zeros((n, max(dims)), dtype=np.float32)
        avail = np.zeros((n, max(acts)), dtype=bool)
        alive = np.zeros(n, dtype=bool)
        for i, a in enumerate(self.agent_ids):
            raw = raw_obs.get(a) if a in live else None
            if raw is None:
                avail[i, 0] = True
                continue
            alive[i] = True
            vec = raw["observation"] if isinstance(raw, Mapping) else raw
            if np.shape(vec) == (dims[i],):
                obs[i, : dims[i]] = vec  # the common case: already flat, numpy casts
            else:
                obs[i, : dims[i]] = true_observation(vec, dims[i], a)
            mask = action_mask(raw, infos.get(a), acts[i], a)
            if mask is None:
                avail[i, : acts[i]] = True
            elif not mask.any():
                if not self._warned_empty_mask:
                    logger.warning(
                        "agent %r has no available action; using action 0 as its placeholder", a
                    )
                    self._warned_empty_mask = True
                avail[i, 0] = True
            else:
                avail[i, : acts[i]] = mask
        if self._state_from_obs and alive.all():
            state = np.concatenate([obs[i, : dims[i]] for i in range(n)])
        elif self._has_state:
            try:
                state = np.asarray(self.env.state(), dtype=np.float32).reshape(-1)
            except Exception as e:
                raise EnvError(f"env.state() failed: {type(e).__name__}: {e}") from e
        else:
            state = np.concatenate([obs[i, : dims[i]] for i in range(n)])
        return TeamStep(obs=obs, avail=avail, alive=alive, state=state)

    _warned_empty_mask = False
    _has_state = False
    _state_from_obs = False

    @property
    def state_from_observations(self) -> bool:
        """The global state is assembled from the step's observations (found equal to
        ``env.state()`` at the probe reset), which saves calling ``env.state()`` every step."""
        return self._state_from_obs

    @property
    def steps_mpe2_directly(self) -> bool:
        """An mpe2 scenario stepped directly, past PettingZoo's parallel wrapper (same results)."""
        return self._stepper is not self.env

    # -- TeamEnv ---------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> TeamStep:
        obs, infos = self._reset_env(seed)
        self._t = 0
        self._over = False
        self._warned_empty_mask = False
        self._live = set(self._stepper.agents)
        self._current = self._team_step(obs, infos, self._live)
        return self._current

    def step(self, actions: np.ndarray) -> StepResult:
        if self._over:
            raise EnvError("the episode is over; call reset() before step()")
        acts = self.check_actions(actions, self._current)
        index, offsets = self._index, self._action_offsets
        acting = [a for a in self.agent_ids if a in self._live]
        joint = {a: int(acts[index[a]] + offsets[index[a]]) for a in acting}
        obs, rewards, terms, truncs, infos = self._stepper.step(joint)
        self._t += 1

        n = len(self.agent_ids)
        agent_rewards = np.zeros(n, dtype=np.float32)
        for a, r in rewards.items():
            if a in index:
                agent_rewards[index[a]] = r
        reward = float(agent_rewards.sum())
        if self.team_reward == "mean":
            reward /= n

        # Agents flagged as ended but left in env.agents (a lax env) are gone for us too.
        remaining = {a for a in self._stepper.agents if not (terms.get(a) or truncs.get(a))}
        env_over = not remaining
        limit_hit = self._t >= self.spec.episode_limit
        done = env_over or limit_hit
        if env_over:
            ended_now = [a for a in acting if terms.get(a) or truncs.get(a)]
            cut = any(truncs.get(a) and not terms.get(a) for a in ended_now)
            if not ended_now:
                logger.debug("env emptied env.agents without end flags; treating as termination")
            truncated, terminated = cut, not cut
        else:
            truncated, terminated = limit_hit, False

        # On the final step report every agent that acted, so a truncated episode can bootstrap.
        self._live = set(acting) if done else remaining
        self._current = self._team_step(obs, infos, self._live)
        self._over = done
        return StepResult(self._current, reward, bool(terminated), bool(truncated), agent_rewards)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()
