"""The collector in a process of its own: env stepping on one core while the learner updates on the other.

`CollectorProcess` is the trainer's handle on a child process that owns the training envs and a
`Collector` with its own copy of the agent network. It is driven in *rounds*: `begin_round` sends
the agent network's current weights and how many vector steps to collect; the child steps the envs
with exactly those weights (one batched forward per vector step, epsilon from the run's schedule)
and `end_round` returns the episodes that finished, in the order they finished. The trainer runs
learner updates between the two calls. Processes meet only at round boundaries, so a run is a fixed
sequence of (weights, round) pairs: deterministic per seed, whatever the timing of either side.

The child also answers `start`, `restore` and `snapshot` (the `Collector`'s own, so a checkpoint
taken at a round boundary resumes exactly) and keeps the envs' RNG streams, which the trainer
hands over at start. It evaluates in the background too (`begin_evaluation`): greedy episodes of
a frozen copy of the agent network on the run's evaluation envs, one vector step after each
round's collection, in the time the learner still spends on that round's updates; the result
comes back with the round that finishes it, so which round that is depends on nothing but the
run's config.

Lifetime, as for env worker processes (`qmix_edge.envs.subproc_vector`): the child ignores SIGINT
(Ctrl-C is the trainer's, which checkpoints and then closes it), dies with its parent on Linux,
and is stopped by `close`, when the handle is garbage collected and at interpreter exit. An error
in the child reaches the trainer as the same exception type with the child's traceback as its
cause; a child that dies is reported with its exit code.

Start method: fork on Linux, as the trainer's env workers (spawn would re-run a user's script that
has no ``if __name__ == "__main__"`` guard), made before the trainer starts any thread of its own;
spawn elsewhere. The child runs torch with one thread.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import traceback
import weakref
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import numpy as np
import torch

from qmix_edge.envs import EnvSpec
from qmix_edge.envs.subproc_vector import (
    RemoteTraceback,
    die_with_parent,
    portable_exception,
    serve_commands,
    stop_processes,
)

from .collector import Collector, EpisodeStats, evaluation_steps
from .config import TrainConfig
from .errors import TrainError
from .networks import AgentNetwork
from .registry import AGENT_NETWORKS, lookup
from .replay import EPISODE_FIELDS, EpisodeBatch
from .run_envs import make_eval_envs, make_train_envs

logger = logging.getLogger(__name__)


class CollectorProcessError(TrainError):
    """The collector process exited unexpectedly; the run cannot continue in this session."""


class RoundResult(NamedTuple):
    """What one round of collection produced."""

    episodes: EpisodeBatch
    """The finished episodes, in the order they finished (k of them; padded to the episode limit)."""
    waves: np.ndarray
    """int64 (n_steps,): how many of ``episodes`` finished at each vector step of the round."""
    returns: np.ndarray
    """float64 (k,): each finished episode's team return."""
    lengths: np.ndarray
    """int64 (k,): each finished episode's length in env steps."""
    terminated: np.ndarray
    """bool (k,): each finished episode ended in a real terminal."""
    evaluation: tuple[int, list[EpisodeStats]] | None = None
    """A background evaluation that finished in this round: its tag and its episodes."""


class EpisodeQueue:
    """Finished episodes held in the child until the round ends (an `EpisodeSink`)."""

    def __init__(self) -> None:
        self.parts: list[EpisodeBatch] = []

    def add(self, episodes: EpisodeBatch, rows: np.ndarray | list[int]) -> None:
        idx = np.asarray(rows, dtype=np.int64)
        self.parts.append(EpisodeBatch(*(field[idx] for field in episodes)))  # copies

    def drain(self, template: EpisodeBatch) -> EpisodeBatch:
        """Everything added since the last drain, in order (zero episodes shaped like ``template``)."""
        parts = self.parts or [EpisodeBatch(*(field[:0] for field in template))]
        self.parts = []
        return EpisodeBatch(*(np.concatenate(fields) for fields in zip(*parts, strict=True)))


def weights_of(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's state dict as numpy copies (what crosses to the child: no tensor sharing)."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _collect(
    collector: Collector,
    queue: EpisodeQueue,
    config: TrainConfig,
    env_steps: int,
    n_steps: int,
) -> RoundResult:
    waves = np.zeros(n_steps, np.int64)
    stats = []
    for i in range(n_steps):
        actions = collector.act(config.epsilon(env_steps + i * collector.n_envs))
        finished = collector.record(collector.venv.step(actions), queue)
        waves[i] = len(finished)
        stats += finished
    return RoundResult(
        episodes=queue.drain(collector.pending),
        waves=waves,
        returns=np.array([s.team_return for s in stats], np.float64),
        lengths=np.array([s.length for s in stats], np.int64),
        terminated=np.array([s.terminated for s in stats], bool),
    )


class _Evaluator:
    """The child's background evaluation: greedy episodes of a frozen copy of the agent network
    on the run's evaluation envs (the env's own implementation), one vector step per round."""

    def __init__(self, config: TrainConfig, spec: EnvSpec, seeds: list[int]) -> None:
        self.venv = make_eval_envs(config)
        self.net = _agent_network(config, spec)
        self.seeds = seeds
        self.episode_limit = spec.episode_limit
        self.tag: int | None = None
        self._steps: Iterator[list[EpisodeStats] | None] | None = None

    def begin(self, tag: int, weights: dict[str, np.ndarray]) -> None:
        if self._steps is not None:
            raise TrainError(f"evaluation {self.tag} is still running; finish it first")
        _load(self.net, weights)
        self.tag = tag
        self._steps = evaluation_steps(self.net, self.venv, self.seeds, self.episode_limit)

    def advance(self, finish: bool = False) -> tuple[int, list[EpisodeStats]] | None:
        """One step (every step when ``finish``); the tag and episodes once it is done."""
        if self._steps is None:
            return None
        for stats in self._steps:
            if stats is not None:
                assert self.tag is not None
                done, self._steps = (self.tag, stats), None
                return done
            if not finish:
                return None
        raise AssertionError("evaluation_steps ends with the episodes")  # pragma: no cover


def _agent_network(config: TrainConfig, spec: EnvSpec) -> AgentNetwork:
    entry = lookup(AGENT_NETWORKS, config.agent_network, "agent network")
    return entry.build(config, spec).requires_grad_(False)


def _load(net: AgentNetwork, weights: dict[str, np.ndarray]) -> None:
    net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})


class _Worker:
    """What the child owns: the training envs and their collector, the background evaluator."""

    def __init__(self, setup: Mapping[str, Any]) -> None:
        self.config: TrainConfig = setup["config"]
        spec: EnvSpec = setup["spec"]
        self.net = _agent_network(self.config, spec)
        rngs = []
        for state in (setup["action_rng"], setup["seed_rng"]):
            rng = np.random.default_rng()
            rng.bit_generator.state = state
            rngs.append(rng)
        venv = make_train_envs(self.config, setup["kind"], spec)
        self.collector = Collector(venv, self.net, spec.episode_limit, rngs[0], rngs[1])
        self.queue = EpisodeQueue()
        try:
            self.evaluator = _Evaluator(self.config, spec, setup["eval_seeds"])
        except BaseException:
            venv.close()
            raise

    def collect_round(self, args: tuple[dict[str, np.ndarray], int, int]) -> RoundResult:
        weights, env_steps, n_steps = args
        _load(self.net, weights)
        result = _collect(self.collector, self.queue, self.config, env_steps, n_steps)
        # In the time the learner still needs for its round's updates.
        return result._replace(evaluation=self.evaluator.advance())

    def handlers(self) -> dict[str, Callable[[Any], Any]]:
        c, e = self.collector, self.evaluator
        return {
            "round": self.collect_round,
            "evaluate": lambda args: e.begin(*args),
            "finish_evaluation": lambda _: e.advance(finish=True),
            "start": lambda _: c.start(),
            "restore": lambda args: c.restore(*args),
            "snapshot": lambda _: c.snapshot(),
        }

    def close(self) -> None:
        for venv in (self.collector.venv, self.evaluator.venv):
            try:
                venv.close()
            except Exception:  # closing must not hide the reason the child stopped
                logger.exception("closing envs in the collector process failed")


def _child(conn: Connection, setup: Mapping[str, Any], parent_pid: int) -> None:
    """The collector process: build its parts, then answer commands until ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    torch.set_num_threads(1)
    worker: _Worker | None = None
    try:
        try:
            worker = _Worker(setup)
            conn.send(("ok", os.getpid()))
        except Exception as e:
            conn.send(("error", portable_exception(e), traceback.format_exc()))
            return
        serve_commands(conn, worker.handlers(), TrainError)
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    finally:
        if worker is not None:
            worker.close()
        conn.close()


class CollectorProcess:
    """The trainer's handle on the collector process (see the module docstring).

    Args:
        config: the run's config (its env, ``n_envs``, network and epsilon schedule).
        kind: the engine that steps the training envs in the child (``batched`` or ``sync``).
        spec: the env's spec (the child checks its envs against it).
        action_rng, seed_rng: the run's exploration and env-seed streams; the child continues
            them from their current state (`snapshot` returns where they are).
    """

    def __init__(
        self,
        config: TrainConfig,
        kind: str,
        spec: EnvSpec,
        action_rng: np.random.Generator,
        seed_rng: np.random.Generator,
        eval_seeds: list[int],
    ) -> None:
        self.n_envs = config.n_envs
        self._busy = False
        setup = {
            "config": config,
            "kind": kind,
            "spec": spec,
            "eval_seeds": list(eval_seeds),
            "action_rng": action_rng.bit_generator.state,
            "seed_rng": seed_rng.bit_generator.state,
        }
        ctx: Any = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child, args=(child, setup, os.getpid()), daemon=True, name="qmix-collector"
        )
        conns: list[Connection] = []
        procs: list[Any] = []  # filled once started: what the finalizer stops
        self._finalizer = weakref.finalize(
            self, stop_processes, conns, procs, "the collector process"
        )
        try:
            self._proc.start()
            conns.append(self._conn)
            procs.append(self._proc)
            child.close()
            self.pid: int = self._receive()
        except BaseException:
            self.close()
            raise

    def _receive(self) -> Any:
        try:
            status, *rest = self._conn.recv()
        except (EOFError, ConnectionError, OSError) as e:
            self._proc.join(timeout=2)
            code = self._proc.exitcode
            self.close()
            raise CollectorProcessError(
                f"the collector process exited unexpectedly (exit code {code}); the run stops "
                "here. Resume it from its last checkpoint (qmix-train --resume RUN_DIR)"
            ) from e
        if status == "ok":
            return rest[0]
        error: BaseException = rest[0]
        error.__cause__ = RemoteTraceback(rest[1])
        raise error

    def _call(self, cmd: str, payload: Any = None) -> Any:
        if self._busy:
            raise TrainError("a collection round is in progress; call end_round() first")
        self._conn.send((cmd, payload))
        return self._receive()

    def start(self) -> None:
        """Reset every env with fresh seeds (the start of a run)."""
        self._call("start")

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Bring the child's envs and pending episodes back to a `snapshot`."""
        self._call("restore", (state, arrays))

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The child collector's `Collector.snapshot` (its RNG streams, pending episodes...)."""
        state, arrays = self._call("snapshot")
        return state, {k: arrays[k] for k in (*EPISODE_FIELDS, "hidden", "prev_actions")}

    def begin_evaluation(self, tag: int, weights: dict[str, np.ndarray]) -> None:
        """Start a greedy evaluation of the agent network ``weights`` in the background: the
        child advances it by one vector step after each round's collection, and the round whose
        step finishes it returns ``(tag, episodes)`` as its ``evaluation``. One at a time."""
        self._call("evaluate", (tag, weights))

    def finish_evaluation(self) -> tuple[int, list[EpisodeStats]] | None:
        """Run the background evaluation to its end now: ``(tag, episodes)``, or None if none runs."""
        result: tuple[int, list[EpisodeStats]] | None = self._call("finish_evaluation")
        return result

    def begin_round(self, weights: dict[str, np.ndarray], env_steps: int, n_steps: int) -> None:
        """Start collecting ``n_steps`` vector steps with the agent network ``weights``; the run
        has ``env_steps`` env steps before the round (epsilon follows the run's schedule)."""
        if self._busy:
            raise TrainError("a collection round is already in progress; call end_round() first")
        self._conn.send(("round", (weights, env_steps, n_steps)))
        self._busy = True

    def end_round(self) -> RoundResult:
        """Wait for the round started by `begin_round` and return what it collected."""
        if not self._busy:
            raise TrainError("no collection round in progress; call begin_round() first")
        self._busy = False
        result: RoundResult = self._receive()
        return result

    def close(self) -> None:
        """Stop the child (idempotent); a round in progress is abandoned."""
        self._busy = False
        self._finalizer()
