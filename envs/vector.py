"""Several team environments stepped together: the interface the trainer's collector drives.

`VectorTeamEnv` is arrays in, arrays out, with a leading ``n_envs`` axis and no per-env objects in its
API, so a batched array environment (e.g. a VMAS torch scenario stepping many worlds in one call) can
implement it later without changing the collector. Two implementations here:

- `SyncVectorEnv`: a loop over `TeamEnv` objects in this process (no overhead, one core).
- `SubprocVectorEnv`: worker processes, each owning a contiguous slice of the envs, driven over pipes;
  all workers step at once, so env stepping runs beside the learner on another core. A worker's
  exception is re-raised in the parent with the env's own message and the remote traceback.

The contract (both implementations, and any future one):

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

Numpy only; the workers import PettingZoo/mpe2 themselves when they make their envs.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
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


def _index_array(indices: Sequence[int] | np.ndarray, n_envs: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n_envs):
        raise EnvError(f"env indices must be in [0, {n_envs}); found {idx.tolist()}")
    if len(set(idx.tolist())) != idx.size:
        raise EnvError(f"env indices must be distinct; found {idx.tolist()}")
    return idx


def _seed_list(seeds: Sequence[int | None] | None, n: int) -> list[int | None]:
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


class _EnvSlice:
    """A contiguous group of `TeamEnv`s with the bookkeeping both implementations share."""

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
        _check_same_spec([e.spec for e in envs])
        self.spec = envs[0].spec
        self.n_envs = len(envs)
        self._slice = _EnvSlice(envs)

    @property
    def envs(self) -> list[TeamEnv]:
        return self._slice.envs

    @property
    def finished(self) -> np.ndarray:
        return ~self._slice.running

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        idx = _index_array(indices, self.n_envs)
        if idx.size == 0:
            return empty_steps(self.spec)
        return self._slice.reset(idx.tolist(), _seed_list(seeds, idx.size))

    def step(self, actions: np.ndarray) -> VectorStepResult:
        acts = self._check_actions(actions)
        return VectorStepResult(*self._slice.step(acts))

    def close(self) -> None:
        self._slice.close()


def _check_same_spec(specs: Sequence[EnvSpec]) -> None:
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


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the cause of the parent's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb


def _worker(conn: Connection, factories: Sequence[Callable[[], TeamEnv]], offset: int) -> None:
    """Worker loop: own a slice of envs, answer commands until ``close``."""
    # Ctrl-C goes to the whole process group: only the parent handles it (it may checkpoint first)
    # and then closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: _EnvSlice | None = None
    try:
        try:
            envs = _EnvSlice([f() for f in factories], offset)
            conn.send(("ok", envs.envs[0].spec))
        except Exception as e:
            conn.send(("error", _portable(e), traceback.format_exc()))
            return
        while True:
            cmd, payload = conn.recv()
            try:
                if cmd == "reset":
                    local, seeds = payload
                    conn.send(("ok", envs.reset(local, seeds)))
                elif cmd == "step":
                    conn.send(("ok", envs.step(payload)))
                elif cmd == "close":
                    conn.send(("ok", None))
                    return
                else:
                    raise EnvError(f"unknown worker command {cmd!r}")
            except Exception as e:
                conn.send(("error", _portable(e), traceback.format_exc()))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    finally:
        if envs is not None:
            try:
                envs.close()
            except Exception:  # closing must not hide the reason the worker stopped
                logger.exception("closing envs in worker %d failed", os.getpid())
        conn.close()


def _portable(e: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else an EnvError carrying its message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return EnvError(f"{type(e).__name__}: {e}")


class SubprocVectorEnv(VectorTeamEnv):
    """Envs in worker processes; worker w owns a contiguous slice of the ``n_envs`` envs.

    Args:
        factories: one picklable callable per env returning a `TeamEnv` (e.g. `EnvFactory`).
        n_workers: number of processes (default: min(n_envs, CPU count)).
        context: multiprocessing start method; ``spawn`` (default) is safe next to a threaded parent
            such as torch.
    """

    def __init__(
        self,
        factories: Sequence[Callable[[], TeamEnv]],
        *,
        n_workers: int | None = None,
        context: str = "spawn",
    ) -> None:
        if not factories:
            raise EnvError("SubprocVectorEnv needs at least one env factory")
        self.n_envs = len(factories)
        n_workers = n_workers or min(self.n_envs, os.cpu_count() or 1)
        if not 1 <= n_workers <= self.n_envs:
            raise EnvError(f"n_workers must be in [1, n_envs={self.n_envs}]; found {n_workers}")
        bounds = np.linspace(0, self.n_envs, n_workers + 1).round().astype(int)
        self._slices = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        ctx: Any = mp.get_context(context)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._closed = False
        self._broken: str | None = None
        self._stepping = False
        for w, (a, b) in enumerate(self._slices):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(child, list(factories[a:b]), a),
                daemon=True,
                name=f"qmix-env-{w}",
            )
            try:
                proc.start()
            except (pickle.PicklingError, AttributeError, TypeError) as e:
                child.close()
                parent.close()
                self._closed = True
                self.close_workers()
                raise EnvError(
                    "env factories must be picklable to reach a worker process (a lambda or a "
                    f"local function is not); use EnvFactory(env_id, ...) instead. Cause: {e}"
                ) from e
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._running = np.zeros(self.n_envs, dtype=bool)
        try:
            specs = self._gather(range(len(self._slices)))
            _check_same_spec(specs)
        except BaseException:
            self.close()
            raise
        self.spec = specs[0]
        # The last view's availability, to reject a bad joint action before any worker steps.
        self._avail = np.zeros((self.n_envs, self.spec.n_agents, self.spec.max_n_actions), bool)
        self._alive = np.zeros((self.n_envs, self.spec.n_agents), bool)

    @property
    def finished(self) -> np.ndarray:
        return ~self._running

    def _gather(self, workers: Sequence[int] | range) -> list[Any]:
        """Receive one reply from each worker; raise the first error after all have answered."""
        results: list[Any] = []
        error: tuple[int, BaseException, str] | None = None
        for w in workers:
            try:
                status, *rest = self._conns[w].recv()
            except (EOFError, ConnectionError, OSError) as e:
                self._procs[w].join(timeout=2)
                code = self._procs[w].exitcode
                self._broken = (
                    f"env worker {w} (envs {self._slices[w][0]}..{self._slices[w][1] - 1}) exited "
                    f"unexpectedly (exit code {code}); the vector env is unusable, close it and make a new one"
                )
                raise EnvError(self._broken) from e
            if status == "ok":
                results.append(rest[0])
            else:
                results.append(None)
                if error is None:
                    error = (w, rest[0], rest[1])
        if error is not None:
            w, exc, tb = error
            a, b = self._slices[w]
            if isinstance(exc, EnvError):
                raise type(exc)(*exc.args) from _RemoteTraceback(tb)
            raise EnvError(
                f"env worker {w} (envs {a}..{b - 1}) failed: {type(exc).__name__}: {exc}"
            ) from _RemoteTraceback(tb)
        return results

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        self._check_open()
        if self._stepping:
            raise EnvError("a step is in progress; call step_wait() before reset_envs()")
        idx = _index_array(indices, self.n_envs)
        seed_list = _seed_list(seeds, idx.size)
        asked: list[tuple[int, list[int]]] = []  # (worker, positions in idx)
        for w, (a, b) in enumerate(self._slices):
            pos = [k for k, i in enumerate(idx.tolist()) if a <= i < b]
            if pos:
                self._conns[w].send(
                    ("reset", ([int(idx[k]) - a for k in pos], [seed_list[k] for k in pos]))
                )
                asked.append((w, pos))
        if not asked:
            return empty_steps(self.spec)
        parts = self._gather([w for w, _ in asked])
        self._running[idx] = True
        first = in_request_order(parts, [p for _, p in asked])
        self._avail[idx], self._alive[idx] = first.avail, first.alive
        return first

    def step(self, actions: np.ndarray) -> VectorStepResult:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        if self._stepping:
            raise EnvError("a step is already in progress; call step_wait() first")
        acts = self._check_actions(actions)
        rows = np.flatnonzero(self._running)
        reject_unavailable(acts[rows], self._avail[rows], self._alive[rows], rows, self.spec)
        for w, (a, b) in enumerate(self._slices):
            self._conns[w].send(("step", acts[a:b]))
        self._stepping = True

    def step_wait(self) -> VectorStepResult:
        self._check_open()
        if not self._stepping:
            raise EnvError("no step in progress; call step_async(actions) first")
        self._stepping = False
        result = merge_slice_steps(self._gather(range(len(self._slices))))
        self._running &= ~(result.terminated | result.truncated)
        self._avail, self._alive = result.next.avail, result.next.alive
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise EnvError("this vector env is closed; make a new one")
        if self._broken is not None:
            raise EnvError(self._broken)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_workers()

    def close_workers(self) -> None:
        """Ask every started worker to stop, then join (terminating any that hang)."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            try:
                if proc.is_alive():
                    conn.send(("close", None))
                    if conn.poll(5):
                        conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for conn, proc in zip(self._conns, self._procs, strict=True):
            proc.join(timeout=5)
            if proc.is_alive():
                logger.warning("env worker %s did not stop; terminating it", proc.name)
                proc.terminate()
                proc.join(timeout=5)
            conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def stack_parts(parts: Sequence[TeamStep]) -> TeamStep:
    """Concatenate stacked `TeamStep`s of consecutive env slices along the env axis."""
    return TeamStep(*(np.concatenate(arrs) for arrs in zip(*parts, strict=True)))


def merge_slice_steps(parts: Sequence[tuple[Any, ...]]) -> VectorStepResult:
    """One result for all envs from each worker's slice step (`_EnvSlice.step`), in slice order."""
    rest = (np.concatenate([p[k] for p in parts]) for k in range(1, 6))
    return VectorStepResult(stack_parts([p[0] for p in parts]), *rest)


def in_request_order(parts: Sequence[TeamStep], positions: Sequence[Sequence[int]]) -> TeamStep:
    """Workers' reset views (worker w answered the requested positions ``positions[w]``), stacked
    in the order the indices were requested."""
    order = np.concatenate([np.asarray(p) for p in positions])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return TeamStep(*(arr[inverse] for arr in stack_parts(parts)))


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
    ``"ray"`` (Ray actors) or ``"batched"`` (the array engine of `batched_mpe`, simple_spread only)."""
    if n_envs < 1:
        raise EnvError(f"n_envs must be a positive integer; found {n_envs}")
    if backend == "batched":
        from .batched_mpe import SPREAD_IDS, BatchedSimpleSpread

        if env_id not in SPREAD_IDS:
            raise EnvError(
                f"the batched engine steps simple_spread only ({sorted(SPREAD_IDS)}); found "
                f"{env_id!r}. Use backend='sync' or 'subproc' for other envs."
            )
        return BatchedSimpleSpread(
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
    if backend == "ray":  # Ray actors (ray_vector imports Ray: only on this path)
        from .ray_vector import RayVectorEnv

        return RayVectorEnv([factory] * n_envs, n_workers=n_workers)
    raise EnvError(f"backend must be 'sync', 'subproc', 'ray' or 'batched'; found {backend!r}")
