"""mpe2's ``simple_spread_v3`` as a batched array environment: many worlds stepped in one call.

`BatchedSimpleSpread` is a `VectorTeamEnv` whose ``n_envs`` worlds live in numpy arrays (positions
and velocities ``(n_envs, N, 2)``, float64 like mpe2's), so one ``step`` is a few dozen array
operations whatever ``n_envs`` is, with no Python object per world or per agent on the step path.

It is *equal* to mpe2's env seen through `PettingZooTeamEnv` (the per-object path), not an
approximation: the tests replay whole episodes in both and compare observations, state, rewards and
episode ends. What makes that hold, taken from mpe2's source:

- **Reset**: ``reset(seed)`` builds gymnasium's generator (``PCG64(SeedSequence(seed))``) and draws
  ``uniform(-1, 1, 2)`` for every agent's position, then every landmark's, in that order; velocities
  and communication are zero. A reset without a seed continues the world's own stream, as mpe2 does.
- **Physics** (mpe2 ``World.step``; dt 0.1, damping 0.25, contact force 100, contact margin 1e-3,
  agent size 0.15, mass 1, sensitivity 5): the action force (action 1/2 = -x/+x, 3/4 = -y/+y) plus a
  softplus contact force between every pair of agents (landmarks do not collide), summed in mpe2's
  pair order so the float64 sums round the same way; then ``pos += vel * dt``,
  ``vel = vel * 0.75 + force * dt``.
- **Reward** per agent: ``global * (1 - local_ratio) + local * local_ratio`` with ``global`` = minus
  the sum over landmarks of the nearest agent's distance and ``local`` = minus the number of other
  agents closer than 0.3. Each is cast to float32, and the team reward is their float32 sum (or mean),
  as `PettingZooTeamEnv` builds it.
- **Observation** of agent i: ``[vel_i, pos_i, landmarks - pos_i, other agents - pos_i, comm zeros]``
  (float64, then float32); the global state is all observations concatenated (mpe2's ``state()``).
- **Episode end**: truncation (bootstrapped) after ``max_cycles`` steps (or the ``episode_limit``
  when smaller); never a terminal.

Only the default scenario options are served (``continuous_actions=False``, no curriculum, no
``terminate_on_success``, full observability); `supports_batched_spread` says whether a given id and
kwargs can use this engine. Numpy only (never torch): the coordinator imports `qmix_edge.envs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import check_engine_args
from .errors import EnvError
from .spec import AgentSpec, EnvSpec, TeamStep
from .vector import (
    VectorStepResult,
    VectorTeamEnv,
    index_array,
    reject_unavailable,
    seed_list,
)

SPREAD_IDS = frozenset({"simple_spread", "mpe2:simple_spread_v3"})
"""Env ids that name mpe2's simple_spread_v3 (the built-in short name and the module form)."""

_DEFAULTS: dict[str, Any] = {
    "N": 3,
    "local_ratio": 0.5,
    "max_cycles": 25,
    "continuous_actions": False,
    "render_mode": None,
    "dynamic_rescaling": True,
    "benchmark_data": False,
    "curriculum": False,
    "terminate_on_success": False,
    "num_agent_neighbors": None,
    "num_landmark_neighbors": None,
}
# Options that only change rendering or info dicts, never observations, rewards or episode ends.
_COSMETIC = frozenset({"render_mode", "dynamic_rescaling", "benchmark_data"})

# mpe2's constants (World, Agent, Scenario.make_world, SimpleEnv._set_action).
_DT = 0.1
_DAMPING = 0.25
_CONTACT_FORCE = 1e2
_CONTACT_MARGIN = 1e-3
_AGENT_SIZE = 0.15
_SENSITIVITY = 5.0
_DIM_C = 2
_N_ACTIONS = 5
# Action -> unit force direction: no-op, -x, +x, -y, +y.
_ACTION_DIRS = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])


def unsupported_spread_options(env_kwargs: Mapping[str, Any]) -> list[str]:
    """The simple_spread kwargs the batched engine does not serve (empty = it serves them all)."""
    bad = []
    for key, value in env_kwargs.items():
        if key not in _DEFAULTS:
            bad.append(f"{key}={value!r} (unknown option)")
        elif key in {"N", "local_ratio", "max_cycles"} or key in _COSMETIC:
            continue
        elif value != _DEFAULTS[key]:
            bad.append(f"{key}={value!r}")
    return bad


def supports_batched_spread(env_id: str, env_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``env_id`` with ``env_kwargs`` is simple_spread in a form this engine reproduces."""
    return env_id in SPREAD_IDS and not unsupported_spread_options(env_kwargs)


class BatchedSimpleSpread(VectorTeamEnv):
    """``n_envs`` simple_spread worlds in arrays (see the module docstring for the equality rules).

    Args:
        n_envs: worlds stepped together.
        env_id: the id recorded in the spec (``simple_spread`` or ``mpe2:simple_spread_v3``).
        n_agents: N (agents and landmarks) unless ``env_kwargs`` sets ``N``.
        team_reward: ``"sum"`` or ``"mean"`` of the agents' rewards.
        episode_limit: max env steps per episode (capped at ``max_cycles``, as for the mpe2 env).
        env_kwargs: simple_spread's keyword arguments (``N``, ``local_ratio``, ``max_cycles`` and
            the cosmetic ones; see `unsupported_spread_options`).
    """

    def __init__(
        self,
        n_envs: int,
        *,
        env_id: str = "simple_spread",
        n_agents: int = 3,
        team_reward: str = "sum",
        episode_limit: int | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        check_engine_args(n_envs, team_reward)
        kwargs = dict(env_kwargs or {})
        bad = unsupported_spread_options(kwargs)
        if bad:
            raise EnvError(
                f"the batched simple_spread does not serve {', '.join(bad)}; supported: N, "
                "local_ratio, max_cycles (and the rendering options). Train with vector='sync' or "
                "'subprocess' to step mpe2's own env instead."
            )
        kwargs.setdefault("N", n_agents)  # recorded like make_env records the team size
        n = int(kwargs["N"])
        if n < 1:
            raise EnvError(f"N must be a positive integer; found {n}")
        local_ratio = float(kwargs.get("local_ratio", _DEFAULTS["local_ratio"]))
        if not 0.0 <= local_ratio <= 1.0:
            raise EnvError(f"local_ratio must be in [0, 1]; found {local_ratio}")
        max_cycles = int(kwargs.get("max_cycles", _DEFAULTS["max_cycles"]))
        if episode_limit is not None and episode_limit < 1:
            raise EnvError(
                f"episode_limit must be a positive number of env steps; found {episode_limit}"
            )
        limit = max_cycles if episode_limit is None else min(max_cycles, episode_limit)
        self.n_envs = n_envs
        self.n = n
        self.local_ratio = local_ratio
        self.mean_reward = team_reward == "mean"
        obs_dim = 4 + 2 * n + 2 * (n - 1) + _DIM_C * (n - 1)
        self.spec = EnvSpec(
            env_id=env_id,
            agents=tuple(AgentSpec(f"agent_{i}", obs_dim, _N_ACTIONS) for i in range(n)),
            state_dim=n * obs_dim,
            episode_limit=limit,
            has_action_masks=False,
            env_kwargs=kwargs,
        )
        self.pos = np.zeros((n_envs, n, 2))  # (E, N, 2) agents' positions, float64 as in mpe2
        self.vel = np.zeros((n_envs, n, 2))  # (E, N, 2)
        self.landmarks = np.zeros((n_envs, n, 2))  # (E, N, 2)
        self.t = np.zeros(n_envs, np.int64)  # steps into each world's episode
        self._running = np.zeros(n_envs, bool)
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._obs = np.zeros((n_envs, n, obs_dim), np.float32)
        self._avail = np.ones((n_envs, n, _N_ACTIONS), bool)
        self._alive = np.ones((n_envs, n), bool)
        self._pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
        # For each agent, the indices of the others in agent order (observation layout).
        self._others = np.array([[j for j in range(n) if j != i] for i in range(n)], np.int64)
        self._others = self._others.reshape(n, max(n - 1, 0))

    # --- VectorTeamEnv ------------------------------------------------------------------------
    @property
    def finished(self) -> np.ndarray:
        return ~self._running

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        idx = index_array(indices, self.n_envs)
        seeds_ = seed_list(seeds, idx.size)
        n = self.n
        for i, seed in zip(idx.tolist(), seeds_, strict=True):
            if seed is not None:
                if seed < 0:
                    raise EnvError(f"env {i}: a seed must be >= 0; found {seed}")
                # gymnasium.utils.seeding.np_random, which mpe2's reset(seed) calls.
                self._rngs[i] = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
            rng = self._rngs[i]
            if rng is None:
                rng = self._rngs[i] = np.random.default_rng()
            # mpe2 draws uniform(-1, 1, 2) per agent, then per landmark: 2N consecutive pairs.
            draws = rng.uniform(-1, +1, (2 * n, 2))
            self.pos[i] = draws[:n]
            self.landmarks[i] = draws[n:]
        self.vel[idx] = 0.0
        self.t[idx] = 0
        self._running[idx] = True
        self._obs[idx] = self._observe(idx)
        return self._view(idx)

    def step(self, actions: np.ndarray) -> VectorStepResult:
        acts = self._check_actions(actions)
        active = self._running.copy()
        rows = np.flatnonzero(active)
        reject_unavailable(acts[rows], self._avail[rows], self._alive[rows], rows, self.spec)
        all_rows = rows.size == self.n_envs
        sel = slice(None) if all_rows else rows
        pos, vel = self.pos[sel], self.vel[sel]
        force = _ACTION_DIRS[acts[sel]] * _SENSITIVITY  # (k, N, 2)
        # Contact forces in mpe2's pair order (a < b), so each agent's float64 sum rounds alike.
        size_sum = _AGENT_SIZE + _AGENT_SIZE
        for a, b in self._pairs:
            delta = pos[:, a] - pos[:, b]  # (k, 2)
            dist = np.sqrt(np.square(delta[:, 0]) + np.square(delta[:, 1]))[:, None]  # (k, 1)
            penetration = np.logaddexp(0, -(dist - size_sum) / _CONTACT_MARGIN) * _CONTACT_MARGIN
            f = _CONTACT_FORCE * delta / dist * penetration  # (k, 2)
            force[:, a] = f + force[:, a]
            force[:, b] = -f + force[:, b]
        pos = pos + vel * _DT
        vel = vel * (1 - _DAMPING)
        vel = vel + force * _DT  # mass 1: force / mass is the force itself
        self.pos[sel], self.vel[sel] = pos, vel
        self.t[rows] += 1

        agent_rewards = np.zeros((self.n_envs, self.n), np.float32)
        agent_rewards[sel] = self._rewards(pos, self.landmarks[sel]).astype(np.float32)
        reward = agent_rewards.sum(axis=1, dtype=np.float32)
        if self.mean_reward:
            reward = reward / np.float32(self.n)
        truncated = active & (self.t >= self.spec.episode_limit)
        self._running &= ~truncated
        self._obs[sel] = self._observe(rows)
        return VectorStepResult(
            next=self._view(np.arange(self.n_envs)),
            reward=reward.astype(np.float32),
            terminated=np.zeros(self.n_envs, bool),
            truncated=truncated,
            agent_rewards=agent_rewards,
            active=active,
        )

    # --- the scenario ---------------------------------------------------------------------------
    def _rewards(self, pos: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """float64 (k, N): each agent's mpe2 reward (global and local terms mixed by local_ratio)."""
        lm_delta = pos[:, :, None, :] - landmarks[:, None, :, :]  # (k, agent, landmark, 2)
        lm_dist = np.sqrt(np.square(lm_delta[..., 0]) + np.square(lm_delta[..., 1]))
        nearest = lm_dist.min(axis=1)  # (k, landmark)
        glob = np.zeros(pos.shape[0])
        for j in range(self.n):  # mpe2: rew -= min(dists), landmark by landmark
            glob = glob - nearest[:, j]
        ag_delta = pos[:, :, None, :] - pos[:, None, :, :]  # (k, N, N, 2)
        ag_dist = np.sqrt(np.square(ag_delta[..., 0]) + np.square(ag_delta[..., 1]))
        touching = ag_dist < _AGENT_SIZE + _AGENT_SIZE
        touching[:, np.arange(self.n), np.arange(self.n)] = (
            False  # an agent never collides with itself
        )
        local = -touching.sum(axis=2).astype(np.float64)  # (k, N)
        return glob[:, None] * (1 - self.local_ratio) + local * self.local_ratio

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        """float32 (k, N, obs_dim): every agent's observation in worlds ``rows``."""
        pos, vel, lm = self.pos[rows], self.vel[rows], self.landmarks[rows]
        k, n = pos.shape[0], self.n
        rel_lm = lm[:, None, :, :] - pos[:, :, None, :]  # (k, N, landmark, 2)
        rel_ag = pos[:, self._others] - pos[:, :, None, :]  # (k, N, N-1, 2)
        comm = np.zeros((k, n, _DIM_C * (n - 1)))
        parts = [vel, pos, rel_lm.reshape(k, n, -1), rel_ag.reshape(k, n, -1), comm]
        return np.concatenate(parts, axis=2).astype(np.float32)

    def _view(self, rows: np.ndarray) -> TeamStep:
        obs = self._obs[rows]
        return TeamStep(
            obs=obs,
            avail=self._avail[rows],
            alive=self._alive[rows],
            state=obs.reshape(obs.shape[0], -1),
        )
