"""`RayVectorEnv`: the `VectorTeamEnv` contract with its env workers as Ray actors.

For environments too slow for one machine's cores: worker ``w`` is a Ray actor owning a contiguous
slice of the ``n_envs`` envs (the same slicing, bookkeeping and results as `SubprocVectorEnv`'s
worker processes), placed by Ray anywhere on the cluster. Every actor steps at once; ``step_async``
sends the actions and returns, ``step_wait`` gathers the slices. A worker's exception is re-raised
here with the env's own message (an `EnvError` stays one) and the remote error as its cause; a
worker that dies makes the vector env unusable, as with the subprocess workers.

Ray is started on first use when it is not running yet (a local Ray on this machine, or the
cluster at ``ray_address``; see `ray_session`), and stopped again by `close` if this env started
it. Ray is imported only when a `RayVectorEnv` is made (``pip install 'qmix-edge[ray]'``).
Numpy only; no torch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import TeamEnv
from .errors import EnvError
from .ray_session import import_ray, start_ray
from .spec import EnvSpec, TeamStep
from .vector import (
    VectorStepResult,
    VectorTeamEnv,
    _check_same_spec,
    _EnvSlice,
    _index_array,
    _seed_list,
    empty_steps,
    in_request_order,
    merge_slice_steps,
    reject_unavailable,
)

logger = logging.getLogger(__name__)


class EnvWorker:
    """What one Ray actor holds: a slice of envs (``ray.remote`` is applied when an env is made)."""

    def __init__(self, factories: Sequence[Callable[[], TeamEnv]], offset: int) -> None:
        self.envs = _EnvSlice([f() for f in factories], offset)

    def spec(self) -> EnvSpec:
        return self.envs.envs[0].spec

    def reset(self, local: Sequence[int], seeds: Sequence[int | None]) -> TeamStep:
        return self.envs.reset(local, seeds)

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        return self.envs.step(actions)

    def close(self) -> None:
        self.envs.close()


class RayVectorEnv(VectorTeamEnv):
    """Envs in Ray actors; actor ``w`` owns a contiguous slice of the ``n_envs`` envs.

    Args:
        factories: one picklable callable per env returning a `TeamEnv` (e.g. `EnvFactory`).
        n_workers: number of actors (default: min(n_envs, the cluster's CPUs)).
        cpus_per_worker: Ray CPUs each actor reserves (default 1).
        ray_address: the cluster to join when Ray is not running yet (None: a local Ray).
    """

    def __init__(
        self,
        factories: Sequence[Callable[[], TeamEnv]],
        *,
        n_workers: int | None = None,
        cpus_per_worker: float = 1.0,
        ray_address: str | None = None,
    ) -> None:
        if not factories:
            raise EnvError("RayVectorEnv needs at least one env factory")
        ray = import_ray()
        self._ray = ray
        self._started_ray = start_ray(ray_address)
        self._closed = False
        self._broken: str | None = None
        self._refs: list[Any] | None = None  # the step in flight
        self._actors: list[Any] = []
        self.n_envs = len(factories)
        if not cpus_per_worker > 0:
            self.close()
            raise EnvError(f"cpus_per_worker must be positive; found {cpus_per_worker}")
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        fits = int(cluster_cpus // cpus_per_worker)
        n_workers = n_workers or max(1, min(self.n_envs, fits))
        if not 1 <= n_workers <= self.n_envs:
            self.close()
            raise EnvError(f"n_workers must be in [1, n_envs={self.n_envs}]; found {n_workers}")
        if n_workers > fits:
            # Ray would wait for CPUs that never come: say so instead of hanging.
            self.close()
            raise EnvError(
                f"{n_workers} env workers x {cpus_per_worker:g} CPU need "
                f"{n_workers * cpus_per_worker:g} CPUs; the Ray cluster has {cluster_cpus:g}. "
                "Use fewer workers, a smaller cpus_per_worker, or a larger cluster."
            )
        bounds = np.linspace(0, self.n_envs, n_workers + 1).round().astype(int)
        self._slices = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        actor_class = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(EnvWorker)
        try:
            self._actors = [actor_class.remote(list(factories[a:b]), a) for a, b in self._slices]
            specs = self._gather([w.spec.remote() for w in self._actors])
            _check_same_spec(specs)
        except BaseException:
            self.close()
            raise
        self.spec = specs[0]
        self._running = np.zeros(self.n_envs, dtype=bool)
        self._avail = np.zeros((self.n_envs, self.spec.n_agents, self.spec.max_n_actions), bool)
        self._alive = np.zeros((self.n_envs, self.spec.n_agents), bool)

    @property
    def finished(self) -> np.ndarray:
        return ~self._running

    def _gather(self, refs: Sequence[Any]) -> list[Any]:
        """Every reply, in order; a worker's error re-raised here once all have answered."""
        exc = self._ray.exceptions
        results: list[Any] = []
        error: tuple[int, BaseException] | None = None
        for w, ref in enumerate(refs):
            try:
                results.append(self._ray.get(ref))
            except exc.RayActorError as e:
                self._broken = (
                    f"env worker {w} (a Ray actor) died: {e}; the vector env is unusable, close it "
                    "and make a new one"
                )
                raise EnvError(self._broken) from e
            except exc.RayTaskError as e:
                results.append(None)
                if error is None:
                    error = (w, e)
        if error is not None:
            w, remote = error
            cause = getattr(remote, "cause", None)
            if isinstance(cause, EnvError):
                raise type(cause)(*cause.args) from remote
            a, b = self._slices[w]
            raise EnvError(
                f"env worker {w} (envs {a}..{b - 1}) failed: {type(cause).__name__}: {cause}"
            ) from remote
        return results

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        self._check_open()
        if self._refs is not None:
            raise EnvError("a step is in progress; call step_wait() before reset_envs()")
        idx = _index_array(indices, self.n_envs)
        seed_list = _seed_list(seeds, idx.size)
        asked: list[list[int]] = []  # positions in idx, per asked worker
        refs = []
        for w, (a, b) in enumerate(self._slices):
            pos = [k for k, i in enumerate(idx.tolist()) if a <= i < b]
            if pos:
                local = [int(idx[k]) - a for k in pos]
                refs.append(self._actors[w].reset.remote(local, [seed_list[k] for k in pos]))
                asked.append(pos)
        if not refs:
            return empty_steps(self.spec)
        parts = self._gather(refs)
        self._running[idx] = True
        first = in_request_order(parts, asked)
        self._avail[idx], self._alive[idx] = first.avail, first.alive
        return first

    def step(self, actions: np.ndarray) -> VectorStepResult:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        if self._refs is not None:
            raise EnvError("a step is already in progress; call step_wait() first")
        acts = self._check_actions(actions)
        rows = np.flatnonzero(self._running)
        reject_unavailable(acts[rows], self._avail[rows], self._alive[rows], rows, self.spec)
        self._refs = [
            actor.step.remote(acts[a:b])
            for actor, (a, b) in zip(self._actors, self._slices, strict=True)
        ]

    def step_wait(self) -> VectorStepResult:
        self._check_open()
        if self._refs is None:
            raise EnvError("no step in progress; call step_async(actions) first")
        refs, self._refs = self._refs, None
        result = merge_slice_steps(self._gather(refs))
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
        for actor in self._actors:
            with contextlib.suppress(Exception):  # a dead actor has nothing left to close
                self._ray.get(actor.close.remote(), timeout=10)
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        self._actors = []
        if self._started_ray:
            self._ray.shutdown()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
