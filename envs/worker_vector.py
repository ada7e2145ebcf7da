"""`WorkerVectorEnv`: the bookkeeping of a vector env whose envs live in workers.

Worker ``w`` owns a contiguous slice ``[a, b)`` of the ``n_envs`` envs (an `EnvSlice`). This base
class keeps what the parent must know whatever carries the messages (pipes to worker processes in
`subproc_vector`, Ray actors in `ray_vector`): which envs run, the last view's availability (a bad
joint action is rejected before any worker steps), the step in flight, and whether the env is
closed or broken. It merges the slices' replies into one result, re-raises a worker's error with
the env's own message, and stops every worker as soon as one of them dies.

A subclass says only how to talk to its workers: `_request` (send one command, return a handle),
`_gather` (every reply, in order; `worker_error` for a failure) and `_stop_workers`.

Numpy only; no torch.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import EnvError
from .spec import EnvSpec, TeamStep
from .vector import (
    VectorStepResult,
    VectorTeamEnv,
    check_same_spec,
    empty_steps,
    index_array,
    reject_unavailable,
    seed_list,
)


def stack_parts(parts: Sequence[TeamStep]) -> TeamStep:
    """Concatenate stacked `TeamStep`s of consecutive env slices along the env axis."""
    return TeamStep(*(np.concatenate(arrs) for arrs in zip(*parts, strict=True)))


def merge_slice_steps(parts: Sequence[tuple[Any, ...]]) -> VectorStepResult:
    """One result for all envs from each worker's slice step (`EnvSlice.step`), in slice order."""
    rest = (np.concatenate([p[k] for p in parts]) for k in range(1, 6))
    return VectorStepResult(stack_parts([p[0] for p in parts]), *rest)


def in_request_order(parts: Sequence[TeamStep], positions: Sequence[Sequence[int]]) -> TeamStep:
    """Workers' reset views (worker w answered the requested positions ``positions[w]``), stacked
    in the order the indices were requested."""
    order = np.concatenate([np.asarray(p) for p in positions])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return TeamStep(*(arr[inverse] for arr in stack_parts(parts)))


def split_evenly(n_envs: int, n_workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[a, b)`` slices of ``n_envs`` envs for ``n_workers`` workers."""
    if not 1 <= n_workers <= n_envs:
        raise EnvError(f"n_workers must be in [1, n_envs={n_envs}]; found {n_workers}")
    bounds = np.linspace(0, n_envs, n_workers + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


class WorkerVectorEnv(VectorTeamEnv):
    """A `VectorTeamEnv` whose envs are sliced over workers (see the module docstring).

    A subclass sets ``n_envs`` and ``slices``, starts its workers, then calls `_started` with the
    specs they report (on any failure before that it calls `close`).
    """

    slices: list[tuple[int, int]]
    """Worker w owns envs ``slices[w][0]`` .. ``slices[w][1] - 1``."""

    def __init__(self) -> None:
        self.closed = False
        self.broken: str | None = None
        """Why the workers are gone (a worker died), or None."""
        self._in_flight: list[tuple[int, Any]] | None = None

    def _started(self, specs: Sequence[EnvSpec]) -> None:
        check_same_spec(specs)
        self.spec = specs[0]
        self._running = np.zeros(self.n_envs, dtype=bool)
        # The last view's availability, to reject a bad joint action before any worker steps.
        self._avail = np.zeros((self.n_envs, self.spec.n_agents, self.spec.max_n_actions), bool)
        self._alive = np.zeros((self.n_envs, self.spec.n_agents), bool)

    # --- what a subclass provides -----------------------------------------------------------------
    @abc.abstractmethod
    def _request(self, worker: int, command: str, *args: Any) -> Any:
        """Send ``command`` (``reset``, ``step``) to ``worker``; a handle for `_gather`."""

    @abc.abstractmethod
    def _gather(self, requests: Sequence[tuple[int, Any]]) -> list[Any]:
        """The reply to each ``(worker, handle)``, in order, once all have answered; raise
        `worker_error` for the first that failed, or `worker_died` if a worker is gone."""

    @abc.abstractmethod
    def _stop_workers(self) -> None:
        """Stop and reap every worker (idempotent; called by `close` and when a worker dies)."""

    # --- shared -----------------------------------------------------------------------------------
    def worker_error(self, worker: int, exc: BaseException, cause: BaseException) -> EnvError:
        """The parent's error for an exception an env raised in ``worker`` (the worker lives on):
        an `EnvError` keeps its type and message; anything else names the worker and its envs."""
        if isinstance(exc, EnvError):
            error = type(exc)(*exc.args)
        else:
            a, b = self.slices[worker]
            error = EnvError(
                f"env worker {worker} (envs {a}..{b - 1}) failed: {type(exc).__name__}: {exc}"
            )
        error.__cause__ = cause
        return error

    def worker_died(self, message: str) -> EnvError:
        """Mark the vector env unusable, stop the other workers at once, and return the error."""
        self.broken = f"{message}; the vector env is unusable, close it and make a new one"
        self._in_flight = None
        self._stop_workers()
        return EnvError(self.broken)

    @property
    def finished(self) -> np.ndarray:
        return ~self._running

    def reset_envs(
        self, indices: Sequence[int] | np.ndarray, seeds: Sequence[int | None] | None = None
    ) -> TeamStep:
        self._check_open()
        if self._in_flight is not None:
            raise EnvError("a step is in progress; call step_wait() before reset_envs()")
        idx = index_array(indices, self.n_envs)
        seeds_ = seed_list(seeds, idx.size)
        requests: list[tuple[int, Any]] = []
        positions: list[list[int]] = []  # positions in idx, per asked worker
        for w, (a, b) in enumerate(self.slices):
            pos = [k for k, i in enumerate(idx.tolist()) if a <= i < b]
            if pos:
                local = [int(idx[k]) - a for k in pos]
                requests.append((w, self._request(w, "reset", local, [seeds_[k] for k in pos])))
                positions.append(pos)
        if not requests:
            return empty_steps(self.spec)
        parts = self._gather(requests)
        self._running[idx] = True
        first = in_request_order(parts, positions)
        self._avail[idx], self._alive[idx] = first.avail, first.alive
        return first

    def step(self, actions: np.ndarray) -> VectorStepResult:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        self._check_open()
        if self._in_flight is not None:
            raise EnvError("a step is already in progress; call step_wait() first")
        acts = self._check_actions(actions)
        rows = np.flatnonzero(self._running)
        reject_unavailable(acts[rows], self._avail[rows], self._alive[rows], rows, self.spec)
        self._in_flight = [
            (w, self._request(w, "step", acts[a:b])) for w, (a, b) in enumerate(self.slices)
        ]

    def step_wait(self) -> VectorStepResult:
        self._check_open()
        if self._in_flight is None:
            raise EnvError("no step in progress; call step_async(actions) first")
        requests, self._in_flight = self._in_flight, None
        result = merge_slice_steps(self._gather(requests))
        self._running &= ~(result.terminated | result.truncated)
        self._avail, self._alive = result.next.avail, result.next.alive
        return result

    def _check_open(self) -> None:
        if self.closed:
            raise EnvError("this vector env is closed; make a new one")
        if self.broken is not None:
            raise EnvError(self.broken)

    def close(self) -> None:
        """Stop every worker (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._in_flight = None
        self._stop_workers()
