"""`RayVectorEnv`: the `VectorTeamEnv` contract with its env workers as Ray actors.

For environments too slow for one machine's cores: worker ``w`` is a Ray actor owning a contiguous
slice of the ``n_envs`` envs (the bookkeeping is `WorkerVectorEnv`'s, shared with
`SubprocVectorEnv`'s worker processes), placed by Ray anywhere on the cluster. Every actor steps at once; ``step_async``
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
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import TeamEnv
from .errors import EnvError
from .ray_session import import_ray, start_ray
from .spec import EnvSpec, TeamStep
from .vector import EnvSlice
from .worker_vector import WorkerVectorEnv, split_evenly

logger = logging.getLogger(__name__)


class EnvWorker:
    """What one Ray actor holds: a slice of envs (``ray.remote`` is applied when an env is made)."""

    def __init__(self, factories: Sequence[Callable[[], TeamEnv]], offset: int) -> None:
        self.envs = EnvSlice([f() for f in factories], offset)

    def spec(self) -> EnvSpec:
        return self.envs.envs[0].spec

    def reset(self, local: Sequence[int], seeds: Sequence[int | None]) -> TeamStep:
        return self.envs.reset(local, seeds)

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        return self.envs.step(actions)

    def close(self) -> None:
        self.envs.close()


def _stop(ray: Any, actors: list[Any], started_ray: bool) -> None:
    """Close and kill every actor, and stop Ray if this env started it. Idempotent."""
    for actor in actors:
        with contextlib.suppress(Exception):  # a dead actor has nothing left to close
            ray.get(actor.close.remote(), timeout=10)
        with contextlib.suppress(Exception):
            ray.kill(actor)
    actors.clear()
    if started_ray:
        with contextlib.suppress(Exception):
            ray.shutdown()


class RayVectorEnv(WorkerVectorEnv):
    """Envs in Ray actors; actor ``w`` owns a contiguous slice of the ``n_envs`` envs.

    Args:
        factories: one picklable callable per env returning a `TeamEnv` (e.g. `EnvFactory`).
        n_workers: number of actors (default: min(n_envs, the cluster's CPUs)).
        cpus_per_worker: Ray CPUs each actor reserves (default 1).
        ray_address: the cluster to join when Ray is not running yet (None: a local Ray).

    Like `SubprocVectorEnv`, it owns its actors' lifetime: `close` (idempotent), garbage
    collection and interpreter exit kill them, and so does the death of any one of them.
    """

    def __init__(
        self,
        factories: Sequence[Callable[[], TeamEnv]],
        *,
        n_workers: int | None = None,
        cpus_per_worker: float = 1.0,
        ray_address: str | None = None,
    ) -> None:
        super().__init__()
        if not factories:
            raise EnvError("RayVectorEnv needs at least one env factory")
        ray = import_ray()
        self._ray = ray
        self._actors: list[Any] = []
        self._finalizer = weakref.finalize(self, _stop, ray, self._actors, start_ray(ray_address))
        self.n_envs = len(factories)
        try:
            if not cpus_per_worker > 0:
                raise EnvError(f"cpus_per_worker must be positive; found {cpus_per_worker}")
            cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
            fits = int(cluster_cpus // cpus_per_worker)
            self.slices = split_evenly(self.n_envs, n_workers or max(1, min(self.n_envs, fits)))
            if len(self.slices) > fits:
                # Ray would wait for CPUs that never come: say so instead of hanging.
                raise EnvError(
                    f"{len(self.slices)} env workers x {cpus_per_worker:g} CPU need "
                    f"{len(self.slices) * cpus_per_worker:g} CPUs; the Ray cluster has "
                    f"{cluster_cpus:g}. Use fewer workers, a smaller cpus_per_worker, or a larger "
                    "cluster."
                )
            actor_class = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(EnvWorker)
            for a, b in self.slices:
                self._actors.append(actor_class.remote(list(factories[a:b]), a))
            self._started(self._gather([(w, a.spec.remote()) for w, a in enumerate(self._actors)]))
        except BaseException:
            self.close()
            raise

    def _request(self, worker: int, command: str, *args: Any) -> Any:
        return getattr(self._actors[worker], command).remote(*args)

    def _gather(self, requests: Sequence[tuple[int, Any]]) -> list[Any]:
        exc = self._ray.exceptions
        results: list[Any] = []
        error: EnvError | None = None
        for w, ref in requests:
            try:
                results.append(self._ray.get(ref))
            except exc.RayActorError as e:
                raise self.worker_died(f"env worker {w} (a Ray actor) died: {e}") from e
            except exc.RayTaskError as e:
                results.append(None)
                if error is None:
                    error = self.worker_error(w, getattr(e, "cause", None) or e, e)
        if error is not None:
            raise error
        return results

    def _stop_workers(self) -> None:
        self._finalizer()
