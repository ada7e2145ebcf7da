"""VMAS scenarios as batched team environments: ``vmas:<scenario>``, many worlds in one call.

VMAS (the Vectorized Multi-Agent Simulator, ProrokLab) simulates ``num_envs`` worlds of one
scenario as torch tensors, so one ``step`` moves every world. `VmasWorlds` is that engine seen in
numpy arrays; `VmasVectorEnv` (`vmas_vector`) puts it behind the `VectorTeamEnv` contract, and
`VmasTeamEnv` (here) is one world of it behind `TeamEnv`: what `make_env` returns for a ``vmas:`` id
(the coordinator's simulator, export's parity trajectories, the reference evaluation).

The rules, in one place:

- **Ids**: ``vmas:<name>`` names a scenario VMAS ships (``vmas:balance``, ``vmas:transport``,
  ``vmas:navigation``, its MPE ports such as ``vmas:simple_spread``, its debug scenarios), and
  ``vmas:<module>:<Class>`` a `vmas.simulator.scenario.BaseScenario` subclass of your own.
- **Actions** are VMAS's discrete ones (``continuous_actions=False``, one flat ``Discrete`` per
  agent: the product of the agent's per-axis choices, times the message count for a speaking
  agent; 9 for a 2-D holonomic agent). Continuous actions are refused.
- **Options**: ``env_kwargs`` are the scenario's own keyword arguments, plus ``max_steps`` (VMAS's
  horizon). ``n_agents`` is passed as the scenario's ``n_agents`` unless ``env_kwargs`` sets it; a
  scenario that does not read it keeps its own team. A keyword the scenario does not read is an
  error (VMAS itself only warns), so a typo does not train the wrong task.
- **Episode limit**: ``max_steps`` or ``episode_limit`` (the smaller when both are given); one of
  them is required, because VMAS scenarios have no horizon of their own. Reaching it truncates
  (bootstrap). The scenario's own ``done()`` is a real terminal (no bootstrap) and wins when both
  happen on one step.
- **Observations**: each agent's flat observation tensor, float32, zero-padded to the largest agent.
  Dict observations are refused. **Global state**: VMAS scenarios define none, so it is every agent's
  true observation concatenated in agent order.
- **Team reward**: the sum (default) or the mean of the agents' rewards. Many VMAS scenarios (balance,
  transport, navigation with its default ``shared_rew``) give every agent the same team reward: the
  mean is then VMAS's own team reward and the sum is ``n_agents`` times it.
- **Masks**: no scenario VMAS ships restricts actions, so every action is available. A scenario
  whose ``info(agent)`` holds an ``action_mask`` (bool, ``(num_envs, n_actions)``) has it honoured;
  a live agent whose mask allows nothing gets action 0 as a placeholder.
- **Seeds**: resetting every world at once seeds VMAS with `group_seed` of their seeds and resets
  them in one vectorised call (a single world's seed is used as is, so a one-world env reset with
  seed ``s`` is VMAS's own ``reset(seed=s)``); resetting some of them seeds and resets world by
  world (``seed(s)`` then ``reset_at(i)``: for most scenarios the world then starts where a one-world
  env reset with ``s`` starts, whatever ``n_envs`` is). Each env object keeps its own copy of VMAS's
  random streams, so other VMAS envs in the process (evaluation envs, a reference env) never shift
  its noise: an episode is a function of its seed and actions.
- **Finished worlds**: VMAS steps all worlds; a finished world is fed action 0, its view is frozen
  at its last step and its reward reported as 0 until the caller resets it.

Numpy only at import: VMAS and torch are imported when a ``vmas:`` env is made, and their absence is
an `EnvError` naming the ``vmas`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import re
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .base import TeamEnv, check_engine_args
from .errors import EnvError, UnsupportedEnvError, did_you_mean
from .sim_import import import_sim_module
from .spec import AgentSpec, EnvSpec, StepResult, TeamStep

logger = logging.getLogger(__name__)

VMAS_PREFIX = "vmas:"
VMAS_INSTALL_HINT = "pip install 'qmix-edge[vmas]'"
"""What to run when VMAS (or the torch it runs on) is missing."""

_VMAS_PACKAGES = ("vmas", "torch", "gym", "pyglet", "six")
_SEED_HIGH = 2**32  # VMAS seeds numpy's legacy generator, which takes seeds below 2**32
# vmas.make_env's own options: this adapter decides them (discrete actions, tuples, the CPU ...).
_FIXED_OPTIONS = frozenset(
    {
        "scenario",
        "num_envs",
        "device",
        "wrapper",
        "wrapper_kwargs",
        "seed",
        "dict_spaces",
        "multidiscrete_actions",
        "clamp_actions",
        "grad_enabled",
        "terminated_truncated",
    }
)
_UNUSED_WARNING = re.compile(r"Scenario kwargs: (\{.*\}) passed but not used")


def is_vmas_id(env_id: str) -> bool:
    """Whether ``env_id`` names a VMAS scenario (``vmas:<scenario>``)."""
    return isinstance(env_id, str) and env_id.startswith(VMAS_PREFIX)


def import_vmas() -> types.ModuleType:
    """Import VMAS, turning a missing VMAS or torch into an `EnvError` that names the extra."""
    return import_sim_module("vmas", packages=_VMAS_PACKAGES, extra=("VMAS", VMAS_INSTALL_HINT))


def vmas_scenario_names() -> list[str]:
    """The scenario names VMAS ships (its own, its MPE ports, its debug scenarios); imports VMAS."""
    vmas = import_vmas()
    return sorted({*vmas.scenarios, *vmas.mpe_scenarios, *vmas.debug_scenarios})


def group_seed(seeds: Sequence[int]) -> int:
    """The one VMAS seed for worlds reset together with per-world ``seeds`` (in world order).

    One world's seed is used as is; several are mixed by numpy's `SeedSequence`, so every world's
    start depends on every seed of the group, deterministically."""
    if len(seeds) == 1:
        return int(seeds[0])
    return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])


def _scenario(env_id: str) -> Any:
    """What ``vmas.make_env`` takes for ``env_id``: a shipped scenario's name or a scenario object."""
    ref = env_id[len(VMAS_PREFIX) :]
    vmas = import_vmas()
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise EnvError(
                f"{env_id!r}: could not import module {module_name!r} for a VMAS scenario class: "
                f"{e}. Expected 'vmas:<scenario>' or 'vmas:<module>:<BaseScenario subclass>'."
            ) from e
        cls = getattr(module, attr, None)
        base = importlib.import_module("vmas.simulator.scenario").BaseScenario
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise EnvError(
                f"{env_id!r}: expected {module_name}.{attr} to be a subclass of VMAS's "
                f"BaseScenario; found {cls!r}"
            )
        return cls()
    names = vmas_scenario_names()
    if ref not in names:
        raise EnvError(
            f"unknown VMAS scenario {ref!r} in {env_id!r}.{did_you_mean(ref, names)} VMAS "
            f"{vmas.__version__} ships: {', '.join(names)}. Or name your own scenario class as "
            "'vmas:<module>:<Class>'."
        )
    return ref


def _unused_keys(caught: Sequence[warnings.WarningMessage]) -> tuple[set[str], list[Any]]:
    """Keyword names VMAS warned it did not use, and the other warnings (to pass on)."""
    unused: set[str] = set()
    others = []
    for w in caught:
        m = _UNUSED_WARNING.search(str(w.message))
        if m:
            unused |= set(re.findall(r"'([^']+)':", m.group(1)))
        else:
            others.append(w)
    return unused, others


def _episode_limit(env_id: str, max_steps: Any, episode_limit: int | None) -> int:
    limits = []
    for name, value in (("max_steps", max_steps), ("episode_limit", episode_limit)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise EnvError(f"{name} must be a positive number of env steps; found {value!r}")
        limits.append(int(value))
    if not limits:
        raise EnvError(
            f"{env_id!r}: VMAS scenarios have no episode length of their own; give one as "
            "env_kwargs max_steps (e.g. --env-kwargs '{\"max_steps\": 100}') or as episode_limit "
            "(--episode-limit 100). Reaching it truncates the episode."
        )
    return min(limits)


class VmasWorlds:
    """``n_envs`` worlds of one VMAS scenario, the engine under `VmasVectorEnv` and `VmasTeamEnv`
    (rules: the module docstring). Its callers check indices, seeds and actions first.

    Args:
        n_envs: worlds simulated together (VMAS's ``num_envs``).
        env_id: ``vmas:<scenario>`` or ``vmas:<module>:<Class>``.
        n_agents: the scenario's ``n_agents`` unless ``env_kwargs`` sets it (where it reads one).
        team_reward: ``"sum"`` or ``"mean"`` of the agents' rewards.
        episode_limit: max env steps per episode (with ``env_kwargs["max_steps"]``, the smaller).
        env_kwargs: the scenario's keyword arguments, and ``max_steps``.
    """

    def __init__(
        self,
        n_envs: int,
        *,
        env_id: str,
        n_agents: int = 3,
        team_reward: str = "sum",
        episode_limit: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        check_engine_args(n_envs, team_reward)
        if not is_vmas_id(env_id) or not env_id[len(VMAS_PREFIX) :]:
            raise EnvError(f"expected an env id 'vmas:<scenario>'; found {env_id!r}")
        kwargs = dict(env_kwargs or {})
        scenario = _scenario(env_id)
        self._check_options(env_id, kwargs)
        limit = _episode_limit(env_id, kwargs.get("max_steps"), episode_limit)
        scenario_kwargs = {
            k: v for k, v in kwargs.items() if k not in ("max_steps", "continuous_actions")
        }
        injected = "n_agents" not in scenario_kwargs
        if injected:
            scenario_kwargs["n_agents"] = n_agents
        unused = self._make_world(env_id, scenario, n_envs, scenario_kwargs)
        if injected:
            if "n_agents" in unused:
                logger.info(
                    "%s has a fixed team of %d agents; n_agents=%d does not apply",
                    env_id,
                    self._world.n_agents,
                    n_agents,
                )
            else:
                kwargs["n_agents"] = n_agents  # recorded like make_env records the team size
        user_unused = sorted(unused - ({"n_agents"} if injected else set()))
        if user_unused:
            raise EnvError(
                f"{env_id!r} does not read env_kwargs {user_unused}; expected the scenario's own "
                "options (see its make_world) and max_steps. Remove or correct them."
            )
        self.n_envs = n_envs
        self.mean_reward = team_reward == "mean"
        agents = self._agent_specs(env_id)
        self._obs_dims = [a.obs_dim for a in agents]
        self.spec = EnvSpec(
            env_id=env_id,
            agents=agents,
            state_dim=sum(self._obs_dims),
            episode_limit=limit,
            has_action_masks=False,
            env_kwargs=kwargs,
        )
        n, d, k = len(agents), self.spec.max_obs_dim, self.spec.max_n_actions
        # Where each agent's true observation sits in a world's flattened padded (n_agents * d) row
        # (None: no padding, the row is the state).
        self._state_index = (
            None
            if all(dj == d for dj in self._obs_dims)
            else np.concatenate([j * d + np.arange(dj) for j, dj in enumerate(self._obs_dims)])
        )
        self._obs = np.zeros((n_envs, n, d), np.float32)  # each world's last view
        self._avail = np.zeros((n_envs, n, k), bool)
        for j, a in enumerate(agents):
            self._avail[:, j, : a.n_actions] = True
        self._alive = np.ones((n_envs, n), bool)  # VMAS agents never leave an episode
        self.running = np.zeros(n_envs, bool)  # worlds in an episode (reset, not yet ended)
        self.t = np.zeros(n_envs, np.int64)  # steps into each world's episode
        with self._own_stream():
            infos = self._world.get_from_scenario(
                get_observations=False, get_rewards=False, get_infos=True, get_dones=False
            )[0]
        if any("action_mask" in (info or {}) for info in infos):
            self.spec = dataclasses.replace(self.spec, has_action_masks=True)

    # --- construction -----------------------------------------------------------------------------
    @staticmethod
    def _check_options(env_id: str, kwargs: Mapping[str, Any]) -> None:
        if kwargs.get("continuous_actions", False):
            raise UnsupportedEnvError(
                f"{env_id!r} with continuous_actions=True: qmix-edge trains discrete actions only "
                "(every agent picks one of a finite set). VMAS discretises every scenario's "
                "actions: drop continuous_actions from env_kwargs."
            )
        fixed = sorted(set(kwargs) & _FIXED_OPTIONS)
        if fixed:
            raise EnvError(
                f"{env_id!r}: env_kwargs {fixed} are VMAS's own make_env options, which this "
                "adapter sets itself (discrete flat actions, tuple spaces, CPU, one seed per "
                "world); expected the scenario's keyword arguments and max_steps. Remove them."
            )

    def _make_world(
        self, env_id: str, scenario: Any, n_envs: int, scenario_kwargs: dict[str, Any]
    ) -> set[str]:
        """Make the VMAS env (``_world``) and its own random streams (``_stream``, seeded afresh:
        unseeded resets are random, as in PettingZoo) without touching the process's shared ones.
        Returns the scenario kwargs VMAS said it did not use."""
        vmas = import_vmas()
        shared = importlib.import_module("vmas.simulator.environment").Environment.vmas_random_state
        self._shared = shared
        outer = list(shared)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                world = vmas.make_env(
                    scenario,
                    num_envs=n_envs,
                    device="cpu",
                    continuous_actions=False,
                    max_steps=None,  # the episode limit is counted here, per world
                    dict_spaces=False,
                    multidiscrete_actions=False,
                    terminated_truncated=True,
                    **scenario_kwargs,
                )
        except EnvError:
            raise
        except Exception as e:
            raise EnvError(
                f"VMAS could not make {env_id!r} with discrete actions and scenario kwargs "
                f"{scenario_kwargs}: {type(e).__name__}: {e}"
            ) from e
        finally:
            stream = list(shared)
            shared[:] = outer
        unused, others = _unused_keys(caught)
        for w in others:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._world, self._stream = world, stream
        with self._own_stream():
            world.seed(int(np.random.SeedSequence().generate_state(1)[0]))
        return unused

    def _agent_specs(self, env_id: str) -> tuple[AgentSpec, ...]:
        world = self._world
        if world.n_agents < 1:
            raise UnsupportedEnvError(f"{env_id!r} has no agents that take actions")
        specs = []
        for agent, obs_space, act_space in zip(
            world.agents, world.observation_space, world.action_space, strict=True
        ):
            shape = getattr(obs_space, "shape", None)
            if shape is None or len(shape) != 1:
                raise UnsupportedEnvError(
                    f"{env_id!r}: agent {agent.name!r} observes {obs_space}; supported: one flat "
                    "observation tensor per agent (a scenario returning a dict of observations "
                    "is not)"
                )
            n_actions = getattr(act_space, "n", None)
            if n_actions is None:
                raise UnsupportedEnvError(
                    f"{env_id!r}: agent {agent.name!r} acts in {act_space}; supported: one "
                    "Discrete action space per agent"
                )
            specs.append(AgentSpec(str(agent.name), int(shape[0]), int(n_actions)))
        ids = [s.agent_id for s in specs]
        if len(set(ids)) != len(ids):
            raise UnsupportedEnvError(f"{env_id!r}: agent names must be distinct; found {ids}")
        return tuple(specs)

    @contextlib.contextmanager
    def _own_stream(self) -> Iterator[None]:
        """Run VMAS calls on this env's own random streams (VMAS keeps one set per process)."""
        outer = list(self._shared)
        self._shared[:] = self._stream
        try:
            yield
        finally:
            self._stream = list(self._shared)
            self._shared[:] = outer

    # --- the engine -----------------------------------------------------------------------------
    def reset(self, idx: np.ndarray, seeds: Sequence[int | None]) -> TeamStep:
        """Reset worlds ``idx`` (distinct, in range), world ``idx[i]`` with ``seeds[i]``; their views."""
        for i, s in zip(idx.tolist(), seeds, strict=True):
            if s is not None and not 0 <= s < _SEED_HIGH:
                raise EnvError(f"env {i}: a seed must be in [0, 2**32); found {s}")
        given = [s for s in seeds if s is not None]
        whole = idx.size == self.n_envs and len(given) in (0, idx.size)
        with self._own_stream():
            if whole:
                by_world = [s for _, s in sorted(zip(idx.tolist(), given, strict=True))]
                seed = group_seed(by_world) if by_world else None
                self._world.reset(seed=seed, return_observations=False)
            else:
                for i, s in zip(idx.tolist(), seeds, strict=True):
                    if s is not None:
                        self._world.seed(s)
                    self._world.reset_at(i, return_observations=False)
            self._observe(idx)
        self.t[idx] = 0
        self.running[idx] = True
        return self.view(idx)

    def step(
        self, actions: np.ndarray
    ) -> tuple[TeamStep, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every world with int64 ``actions`` (n_envs, n_agents), allowed for the running ones.

        Returns (views, team reward, terminated, truncated, agent rewards, active), all worlds."""
        active = self.running.copy()
        rows = np.flatnonzero(active)
        acts = np.where(active[:, None], actions, 0)  # finished worlds idle until they are reset
        with self._own_stream():
            obs, rews, term, _, infos = self._world.step([acts[:, j] for j in range(acts.shape[1])])
        self.t[rows] += 1
        agent_rewards = np.stack([r.numpy() for r in rews], axis=1).astype(np.float32)
        agent_rewards[~active] = 0.0
        reward = agent_rewards.sum(axis=1, dtype=np.float32)
        if self.mean_reward:
            reward = reward / np.float32(self.spec.n_agents)
        terminated = active & term.numpy().astype(bool)
        truncated = active & ~terminated & (self.t >= self.spec.episode_limit)
        self.running &= ~(terminated | truncated)
        self._store(rows, obs, infos)
        nxt = self.view(np.arange(self.n_envs))
        return nxt, reward, terminated, truncated, agent_rewards, active

    # --- views ------------------------------------------------------------------------------------
    def _observe(self, rows: np.ndarray) -> None:
        """Read the scenario's observations (and masks) of worlds ``rows`` after a reset."""
        got = self._world.get_from_scenario(
            get_observations=True,
            get_rewards=False,
            get_infos=self.spec.has_action_masks,
            get_dones=False,
        )
        self._store(rows, got[0], got[1] if self.spec.has_action_masks else None)

    def _store(self, rows: np.ndarray, obs: Sequence[Any], infos: Sequence[Any] | None) -> None:
        """Keep worlds ``rows``' views from VMAS's per-agent tensors ``(num_envs, ...)``."""
        sel: slice | np.ndarray = slice(None) if rows.size == self.n_envs else rows
        for j, (o, d) in enumerate(zip(obs, self._obs_dims, strict=True)):
            self._obs[sel, j, :d] = o.numpy()[sel]
        if infos is None or not self.spec.has_action_masks:
            return
        for j, (info, a) in enumerate(zip(infos, self.spec.agents, strict=True)):
            mask = info.get("action_mask") if info else None
            if mask is None:
                continue
            m = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask, bool)[sel]
            if m.shape[-1] != a.n_actions:
                raise EnvError(
                    f"{self.spec.env_id!r}: agent {a.agent_id!r}'s action_mask has "
                    f"{m.shape[-1]} entries; expected {a.n_actions} (its action count)"
                )
            m = m.copy()
            m[~m.any(axis=-1), 0] = True  # nothing allowed: action 0 stands in
            self._avail[sel, j, : a.n_actions] = m

    def view(self, rows: np.ndarray) -> TeamStep:
        """The last views of worlds ``rows``, stacked."""
        every = rows.size == self.n_envs  # a slice copies faster than fancy indexing
        obs = self._obs.copy() if every else self._obs[rows]
        flat = obs.reshape(obs.shape[0], obs.shape[1] * obs.shape[2])
        return TeamStep(
            obs=obs,
            avail=self._avail.copy() if every else self._avail[rows],
            alive=self._alive.copy() if every else self._alive[rows],
            state=flat if self._state_index is None else flat[:, self._state_index],
        )


class VmasTeamEnv(TeamEnv):
    """One world of a VMAS scenario as a `TeamEnv` (a one-world `VmasWorlds`).

    What `make_env` returns for ``vmas:`` ids: the coordinator steps it as its simulator. ``reset``
    with seed ``s`` is VMAS's own ``reset(seed=s)`` of a one-world env. ``options``: `VmasWorlds`'
    keyword arguments.
    """

    def __init__(self, env_id: str, **options: Any) -> None:
        self._world = VmasWorlds(1, env_id=env_id, **options)
        self.spec = self._world.spec
        self._current: TeamStep | None = None

    def reset(self, seed: int | None = None) -> TeamStep:
        self._current = _first(self._world.reset(np.zeros(1, np.int64), [seed]))
        return self._current

    def step(self, actions: np.ndarray) -> StepResult:
        if self._current is None or not self._world.running[0]:
            raise EnvError("the episode is over (or never started); call reset() before step()")
        acts = self.check_actions(actions, self._current)
        nxt, reward, terminated, truncated, agent_rewards, _ = self._world.step(acts[None, :])
        self._current = _first(nxt)
        return StepResult(
            next=self._current,
            reward=float(reward[0]),
            terminated=bool(terminated[0]),
            truncated=bool(truncated[0]),
            agent_rewards=agent_rewards[0],
        )


def _first(view: TeamStep) -> TeamStep:
    return TeamStep(*(np.array(x[0]) for x in view))
