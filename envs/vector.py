"""Several team environments stepped together: the interface the trainer's collector drives.

`VectorTeamEnv` is arrays in, arrays out, with a leading ``n_envs`` axis and no per-env objects in its
API, so a batched array environment (e.g. a VMAS torch scenario stepping many worlds in one call) can
implement it later without changing the collector. Implementations:

- `SyncVectorEnv` (here): a loop over `TeamEnv` objects in this process (no overhead, one core).
- `SubprocVectorEnv` (`subproc_vector`) and `RayVectorEnv` (`ray_vector`): worker processes or
  Ray actors, each owning a contiguous slice of the envs, all stepping at once; their shared
  bookkeeping is `WorkerVectorEnv` (`worker_vector`).
- `BatchedSimpleSpread` (`batched_mpe`): one array engine stepping every world in one call.
- `VmasVectorEnv` (`vmas_vector`): a VMAS scenario's worlds, stepped by VMAS in one call.
- `make_vector_env` (`make_vector`): an env id and a backend name in, one of the above out.

The contract (every implementation):

- ``reset_envs(indices, seeds)`` resets the listed envs (each with its own seed, or None) and returns
  their first `TeamStep`, stacked in the order of ``indices``.
- ``step(actions)`` takes int64 ``(n_envs, n_agents)`` and steps every env that is running; the
  actions of finished (or never reset) envs are ignored. It returns a `VectorStepResult` for all envs;
  for envs that were not stepped, ``active`` is False, the reward is 0, both end flags are False and
  ``next`` repeats their last view.
- ``step_async(actions)`` then ``step_wait()`` is the same step split in two, so the caller can run
  learner updates while worker processes step (in-process envs simply step inside ``step_wait``).
- Finished envs are NOT reset automatically: the caller resets them by index (the collector decides
  when a new episode may start). ``finished`` says which envs need a reset.

Numpy only.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .base import TeamEnv
from .errors import EnvError
from .spec import EnvSpec, StepResult, TeamStep

logger = logging.getLogger(__name__)


class VectorStepResult(NamedTuple):
    """The outcome of one vector step, for all ``n_envs`` envs."""

    next: TeamStep
    """Stacked views after the step: obs (n_envs, n_agents, max_obs_dim), avail (n_envs, n_agents,
    max_n_actions), alive (n_envs, n_agents), state (n_envs, state_dim)."""
    reward: np.ndarray
    """float32 (n_envs,): team reward of this step (0 for envs not stepped)."""
    terminated: np.ndarray
    """bool (n_envs,): the env's episode reached a real terminal on this step (no bootstrap)."""
    truncated: np.ndarray
    """bool (n_envs,): the env's episode was cut by a time limit on this step (bootstrap)."""
    agent_rewards: np.ndarray
    """float32 (n_envs, n_agents): each agent's own reward this step."""
    active: np.ndarray
    """bool (n_envs,): the env was running and was stepped by this call."""


def stack_steps(steps: Sequence[TeamStep]) -> TeamStep:
    """Stack per-env `TeamStep`s along a new leading axis."""
    return TeamStep(
        obs=np.stack([s.obs for s in steps]),
        avail=np.stack([s.avail for s in steps]),
        alive=np.stack([s.alive for s in steps]),
        state=np.stack([s.state for s in steps]),
    )


def empty_steps(spec: EnvSpec) -> TeamStep:
    """A stacked `TeamStep` of zero envs (what resetting no env returns)."""
    n, d, k = spec.n_agents, spec.max_obs_dim, spec.max_n_actions
    return TeamStep(
        obs=np.zeros((0, n, d), np.float32),
        avail=np.zeros((0, n, k), bool),
        alive=np.zeros((0, n), bool),
        state=np.zeros((0, spec.state_dim), np.float32),
    )


def index_array(indices: Sequence[int] | np.ndarray, n_envs: int) -> np.ndarray:
    """``indices`` as int64, checked to be distinct env indices in ``[0, n_envs)``."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_envs):
        raise EnvError(f"env indices must be in [0, {n_envs}); found {idx.tolist()}")
    if len(set(idx.tolist())) != idx.size:
        raise EnvError(f"env indices must be distinct; found {idx.tolist()}")
    return idx


def seed_list(seeds: Sequence[int | None] | None, n: int) -> list[int | None]:
    """One seed (or None) per requested index."""
    if seeds is None:
        return [None] * n
    out = [None if s is None else int(s) for s in seeds]
    if len(out) != n:
        raise EnvError(f"expected one seed per index ({n}); found {len(out)} seeds")
    return out


class VectorTeamEnv(abc.ABC):
    """``n_envs`` copies of one team environment, stepped together (see the module docstring)."""

    spec: EnvSpec
    n_envs: int

    @abc.abstractmethod
    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        """Reset the envs at ``indices`` (seed i for env indices[i]); stacked first views."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> VectorStepResult:
        """Step every running env with its row of ``actions`` (int64, (n_envs, n_agents))."""

    @property
    @abc.abstractmethod
    def finished(self) -> np.ndarray:
        """bool (n_envs,): envs whose episode is over (or never started) and need `reset_envs`."""

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step and return at once; `step_wait` finishes it.

        Lets the caller work (e.g. run learner updates) while worker processes step their envs.
        The base implementation only stores the actions: in-process envs step inside `step_wait`.
        """
        if getattr(self, "_pending", None) is not None:
            raise EnvError("a step is already in progress; call step_wait() first")
        self._pending: np.ndarray | None = self._check_actions(actions)

    def step_wait(self) -> VectorStepResult:
        """Finish the step started by `step_async` and return its result."""
        acts = getattr(self, "_pending", None)
        if acts is None:
            raise EnvError("no step in progress; call step_async(actions) first")
        self._pending = None
        return self.step(acts)

    def reset_all(self, seeds: Sequence[int | None] | None = None) -> TeamStep:
        """Reset every env; ``seeds`` has one entry per env (or None)."""
        return self.reset_envs(np.arange(self.n_envs), seeds)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the envs (and worker processes)."""

    def __enter__(self) -> VectorTeamEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        acts = np.asarray(actions)
        expected = (self.n_envs, self.spec.n_agents)
        if acts.shape != expected:
            raise EnvError(
                f"expected actions of shape {expected} (n_envs, n_agents); found {acts.shape}"
            )
        if not np.issubdtype(acts.dtype, np.integer):
            raise EnvError(f"expected integer actions; found dtype {acts.dtype}")
        return acts.astype(np.int64)


def reject_unavailable(
    actions: np.ndarray, avail: np.ndarray, alive: np.ndarray, env_ids: np.ndarray, spec: EnvSpec
) -> None:
    """Raise `EnvError` if any live agent's action is unavailable, before any env steps.

    Shapes: actions (k, n_agents), avail (k, n_agents, max_n_actions), alive (k, n_agents), env_ids
    (k,) the envs' indices for the message. Checking the whole joint action first makes a bad one
    atomic: no env is stepped, so the vector env stays consistent.
    """
    k_max = avail.shape[2]
    ok = (actions >= 0) & (actions < k_max)
    ok &= np.take_along_axis(avail, np.clip(actions, 0, k_max - 1)[..., None], axis=2)[..., 0]
    bad = np.argwhere(alive & ~ok)
    if bad.size:
        r, j = (int(x) for x in bad[0])
        raise EnvError(
            f"env {int(env_ids[r])}: action {int(actions[r, j])} is not available to agent "
            f"{spec.agents[j].agent_id!r}; available: {np.flatnonzero(avail[r, j]).tolist()}. "
            "No env was stepped."
        )


class EnvSlice:
    """A contiguous group of `TeamEnv`s stepped in one process: what `SyncVectorEnv` holds, and
    what each worker of a `WorkerVectorEnv` holds."""

    def __init__(self, envs: Sequence[TeamEnv], offset: int = 0) -> None:
        self.envs = list(envs)
        self.offset = offset  # index of envs[0] in the whole vector env (for messages)
        self.last: list[TeamStep | None] = [None] * len(self.envs)
        self.running = np.zeros(len(self.envs), dtype=bool)

    def reset(self, local: Sequence[int], seeds: Sequence[int | None]) -> TeamStep:
        steps = []
        for i, seed in zip(local, seeds, strict=True):
            ts = self.envs[i].reset(seed=seed)
            self.last[i] = ts
            self.running[i] = True
            steps.append(ts)
        return stack_steps(steps)

    def step(
        self, actions: np.ndarray
    ) -> tuple[TeamStep, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.envs)
        n_agents = actions.shape[1]
        reward = np.zeros(n, dtype=np.float32)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        agent_rewards = np.zeros((n, n_agents), dtype=np.float32)
        active = self.running.copy()
        self._check_available(actions, active)
        for i in np.flatnonzero(active):
            res: StepResult = self.envs[i].step(actions[i])
            self.last[i] = res.next
            reward[i] = res.reward
            term[i], trunc[i] = res.terminated, res.truncated
            agent_rewards[i] = res.agent_rewards
            if res.done:
                self.running[i] = False
        missing = [i for i, s in enumerate(self.last) if s is None]
        if missing:
            raise EnvError(f"envs {missing} were never reset; call reset_envs() first")
        nxt = stack_steps([s for s in self.last if s is not None])
        return nxt, reward, term, trunc, agent_rewards, active

    def _check_available(self, actions: np.ndarray, active: np.ndarray) -> None:
        rows = np.flatnonzero(active)
        views = [self.last[i] for i in rows]
        if rows.size == 0 or any(v is None for v in views):
            return  # never-reset envs are reported by step()
        avail = np.stack([v.avail for v in views if v is not None])
        alive = np.stack([v.alive for v in views if v is not None])
        reject_unavailable(actions[rows], avail, alive, rows + self.offset, self.envs[0].spec)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class SyncVectorEnv(VectorTeamEnv):
    """All envs in this process, stepped in a loop. ``envs``: already-made envs of one spec."""

    def __init__(self, envs: Sequence[TeamEnv]) -> None:
        if not envs:
            raise EnvError("SyncVectorEnv needs at least one env")
        check_same_spec([e.spec for e in envs])
        self.spec = envs[0].spec
        self.n_envs = len(envs)
        self._slice = EnvSlice(envs)

    @property
    def envs(self) -> list[TeamEnv]:
        return self._slice.envs

    @property
    def finished(self) -> np.ndarray:
        return ~self._slice.running

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        idx = index_array(indices, self.n_envs)
        if idx.size == 0:
            return empty_steps(self.spec)
        return self._slice.reset(idx.tolist(), seed_list(seeds, idx.size))

    def step(self, actions: np.ndarray) -> VectorStepResult:
        acts = self._check_actions(actions)
        return VectorStepResult(*self._slice.step(acts))

    def close(self) -> None:
        self._slice.close()


def check_same_spec(specs: Sequence[EnvSpec]) -> None:
    """Raise `EnvError` unless every env of a vector env has one spec."""
    first = specs[0]
    for i, s in enumerate(specs[1:], start=1):
        if s.agents != first.agents or s.state_dim != first.state_dim:
            raise EnvError(
                f"all envs of a vector env must share one spec; env {i} differs: {s} vs {first}"
            )


@dataclass(frozen=True)
class EnvFactory:
    """A picklable recipe for one env: `make_env`'s arguments (what a worker process needs)."""

    env_id: str
    """The id for `make_env`."""
    n_agents: int = 3
    """Team size where the env lets us choose it."""
    team_reward: str = "sum"
    """``"sum"`` or ``"mean"``."""
    episode_limit: int | None = None
    """Max env steps per episode (see `make_env`)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for the env's factory."""

    def __call__(self) -> TeamEnv:
        from .registry import make_env

        return make_env(
            self.env_id,
            n_agents=self.n_agents,
            team_reward=self.team_reward,  # type: ignore[arg-type]
            episode_limit=self.episode_limit,
            env_kwargs=dict(self.env_kwargs),
        )
