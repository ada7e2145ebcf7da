"""`SubprocVectorEnv`: the `VectorTeamEnv` contract with its envs in worker processes.

Worker ``w`` is a process owning a contiguous slice of the envs, driven over a pipe; all workers
step at once, so env stepping runs beside the learner on another core. A worker's exception is
re-raised in the parent with the env's own message and the remote traceback.

The vector env owns its workers' whole lifetime, so no caller has to:

- started in `__init__` with SIGINT ignored (Ctrl-C goes to the whole process group; only the
  parent handles it, e.g. to checkpoint, and then closes the workers);
- on Linux, each worker asks the kernel to kill it when the parent dies (``PR_SET_PDEATHSIG``): a
  forked worker inherits the parent's end of its pipe, so it would never see EOF and would outlive
  a parent killed with SIGKILL;
- stopped and reaped by `close` (idempotent; also the context manager's exit), when the object is
  garbage collected, at interpreter exit, and at once when one worker dies mid-step.

Numpy only; the workers import PettingZoo/mpe2 themselves when they make their envs.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from .base import TeamEnv
from .errors import EnvError
from .vector import EnvSlice
from .worker_vector import WorkerVectorEnv, split_evenly

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
"""How long a worker gets to close its envs and exit before it is terminated."""


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the cause of the parent's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (best effort elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: best effort only
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _worker(
    conn: Connection, factories: Sequence[Callable[[], TeamEnv]], offset: int, parent_pid: int
) -> None:
    """Worker loop: own a slice of envs, answer commands until ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    envs: EnvSlice | None = None
    try:
        try:
            envs = EnvSlice([f() for f in factories], offset)
            conn.send(("ok", envs.envs[0].spec))
        except Exception as e:
            conn.send(("error", portable_exception(e), traceback.format_exc()))
            return
        serve_commands(
            conn, {"reset": lambda args: envs.reset(*args), "step": lambda args: envs.step(args[0])}
        )
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    finally:
        if envs is not None:
            try:
                envs.close()
            except Exception:  # closing must not hide the reason the worker stopped
                logger.exception("closing envs in worker %d failed", os.getpid())
        conn.close()


def serve_commands(
    conn: Connection,
    handlers: Mapping[str, Callable[[Any], Any]],
    error: type[Exception] = EnvError,
) -> None:
    """Answer ``(command, payload)`` messages on ``conn`` until ``close``: ``("ok", result)`` with
    the command's handler's result, or ``("error", exception, traceback)`` when it raised (the
    process lives on); an unknown command is an ``error`` of that type."""
    while True:
        cmd, payload = conn.recv()
        try:
            if cmd == "close":
                conn.send(("ok", None))
                return
            handler = handlers.get(cmd)
            if handler is None:
                raise error(f"unknown worker command {cmd!r}")
            conn.send(("ok", handler(payload)))
        except Exception as e:
            conn.send(("error", portable_exception(e), traceback.format_exc()))


def portable_exception(e: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else an EnvError carrying its message."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return EnvError(f"{type(e).__name__}: {e}")


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while workers start, so a forked one never runs Python's handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_processes(conns: list[Connection], procs: list[Any], what: str = "env worker") -> None:
    """Ask every child (``procs[i]``, at the end of pipe ``conns[i]``) to close, then join it,
    terminating any that hangs; empties both lists. Idempotent."""
    for conn, proc in zip(conns, procs, strict=True):
        try:
            if proc.is_alive():
                conn.send(("close", None))
                if conn.poll(STOP_TIMEOUT_S):
                    conn.recv()
        except (BrokenPipeError, EOFError, OSError):
            pass
    for conn, proc in zip(conns, procs, strict=True):
        proc.join(timeout=STOP_TIMEOUT_S)
        if proc.is_alive():
            logger.warning("%s %s did not stop; terminating it", what, proc.name)
            proc.terminate()
            proc.join(timeout=STOP_TIMEOUT_S)
        conn.close()
    conns.clear()
    procs.clear()


class SubprocVectorEnv(WorkerVectorEnv):
    """Envs in worker processes; worker w owns a contiguous slice of the ``n_envs`` envs.

    Args:
        factories: one picklable callable per env returning a `TeamEnv` (e.g. `EnvFactory`).
        n_workers: number of processes (default: min(n_envs, CPU count)).
        context: multiprocessing start method; ``spawn`` (default) is safe next to a threaded
            parent; ``fork`` starts faster and does not re-import ``__main__`` (a script without
            an ``if __name__ == "__main__"`` guard), for parents whose other threads the workers
            never touch.
    """

    def __init__(
        self,
        factories: Sequence[Callable[[], TeamEnv]],
        *,
        n_workers: int | None = None,
        context: str = "spawn",
    ) -> None:
        super().__init__()
        if not factories:
            raise EnvError("SubprocVectorEnv needs at least one env factory")
        self.n_envs = len(factories)
        self.slices = split_evenly(self.n_envs, n_workers or min(self.n_envs, os.cpu_count() or 1))
        ctx: Any = mp.get_context(context)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        # Reaps the workers when this object is collected or the interpreter exits.
        self._finalizer = weakref.finalize(self, stop_processes, self._conns, self._procs)
        try:
            with sigint_ignored():
                for w, (a, b) in enumerate(self.slices):
                    self._start_worker(ctx, w, list(factories[a:b]), a)
            self._started(self._gather([(w, None) for w in range(len(self.slices))]))
        except BaseException:
            self.close()
            raise

    def _start_worker(
        self, ctx: Any, w: int, factories: list[Callable[[], TeamEnv]], offset: int
    ) -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_worker,
            args=(child, factories, offset, os.getpid()),
            daemon=True,
            name=f"qmix-env-{w}",
        )
        try:
            proc.start()
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            parent.close()
            raise EnvError(
                "env factories must be picklable to reach a worker process (a lambda or a "
                f"local function is not); use EnvFactory(env_id, ...) instead. Cause: {e}"
            ) from e
        finally:
            child.close()
        self._conns.append(parent)
        self._procs.append(proc)

    @property
    def worker_pids(self) -> list[int]:
        """The process id of each running worker (empty once closed)."""
        return [p.pid for p in self._procs]

    def _request(self, worker: int, command: str, *args: Any) -> None:
        self._conns[worker].send((command, args))

    def _gather(self, requests: Sequence[tuple[int, Any]]) -> list[Any]:
        results: list[Any] = []
        error: EnvError | None = None
        for w, _ in requests:
            try:
                status, *rest = self._conns[w].recv()
            except (EOFError, ConnectionError, OSError) as e:
                self._procs[w].join(timeout=2)
                a, b = self.slices[w]
                raise self.worker_died(
                    f"env worker {w} (envs {a}..{b - 1}) exited unexpectedly (exit code "
                    f"{self._procs[w].exitcode})"
                ) from e
            results.append(rest[0] if status == "ok" else None)
            if status != "ok" and error is None:
                error = self.worker_error(w, rest[0], RemoteTraceback(rest[1]))
        if error is not None:
            raise error
        return results

    def _stop_workers(self) -> None:
        self._finalizer()
