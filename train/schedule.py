"""How collection and learning take turns: inline in one process, or overlapped on two cores.

The trainer advances a run by calling `advance` on a schedule until the run is long enough; each
call collects some env steps, runs the learner updates the update ratio owes (`UpdatePacer`), puts
finished episodes into replay and returns what happened (`Progress`). Two schedules:

- `InlineSchedule` (``overlap`` off): one vector step per call. The collector picks every env's
  action in one batched forward, the envs start stepping (in worker processes when the engine has
  them), the owed updates run meanwhile, the step completes and is recorded. The policy that acts
  has every update owed so far.

- `OverlappedSchedule` (``overlap`` on): one *round* of ``overlap_round_steps`` vector steps per
  call. The round starts in the collector process (`CollectorProcess`) with the agent network's
  weights of this moment; while the child steps the envs, this process runs the updates owed over
  those vector steps, sampling replay as it stood at the round's start; then the round's episodes
  enter replay. Staleness bound: the policy acting in a round has learned from every episode that
  finished before the round started, and its weights are at most the updates of one round behind
  the learner's (``rollout/policy_lag``, logged, counts them). Exactly the same rounds, weights and
  samples happen whatever the speed of either process, so a run is deterministic per seed and a
  checkpoint (always taken between rounds) resumes exactly; it is not the same run as the inline
  schedule's, whose policy never lags. Rounds lie on a grid of ``overlap_round_steps`` vector
  steps from the run's start; only the last round of a ``train(total)`` call may be cut short,
  so a run continued after a ``total`` that is off that grid differs from one never stopped
  (stops at checkpoints, Ctrl-C and ``max_seconds`` are on it).

Both feed the learning-rate schedule the env-step count of each vector step, update the running
reward statistics and the pacer with each vector step's finished episodes in order, and leave the
random streams in their checkpoints. The overlapped schedule also evaluates in the background
(``background_evaluation``): the collector process runs the greedy episodes of a frozen copy of
the weights one vector step per round, in its spare time (`CollectorProcess.begin_evaluation`).
"""

from __future__ import annotations

import math
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from qmix_edge.envs import VectorTeamEnv

from .collector import Collector, EpisodeStats
from .collector_process import CollectorProcess, weights_of
from .config import TrainConfig
from .errors import TrainError
from .learner import Learner
from .pacer import UpdatePacer
from .replay import EpisodeReplay


class Progress(NamedTuple):
    """What one `advance` did."""

    env_steps: int
    """Env steps collected (``n_envs`` per vector step)."""
    finished: list[EpisodeStats]
    """The episodes that ended, in order."""
    epsilon: float
    """The exploration rate of the first vector step."""
    train_info: dict[str, float]
    """The metrics of the last learner update run ({} when none ran)."""
    policy_lag: int
    """Learner updates the acting policy did not have yet at the end (0 inline)."""
    evaluation: tuple[int, list[EpisodeStats]] | None = None
    """A background evaluation that finished: its tag and its episodes (overlapped only)."""


class Schedule(Protocol):
    """What the trainer needs of a schedule."""

    background_evaluation: bool
    """Whether greedy evaluations run beside training (`begin_evaluation`) rather than in the
    trainer's own process, between two advances."""

    def begin_evaluation(self, tag: int, weights: dict[str, np.ndarray]) -> None:
        """Start evaluating the agent network ``weights`` in the background (one at a time)."""

    def finish_evaluation(self) -> tuple[int, list[EpisodeStats]] | None:
        """Complete the background evaluation now: ``(tag, episodes)``, or None if none runs."""

    def start(self) -> None:
        """Reset every env with fresh seeds (the start of a run)."""

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Bring the envs and pending episodes back to a `snapshot`."""

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The collector's state (JSON-able) and arrays, between two advances."""

    def advance(self, env_steps: int, total: int) -> Progress:
        """Collect and learn from ``env_steps`` env steps on, in a run of ``total``."""

    def close(self) -> None:
        """Release the envs (and the collector process)."""


class _Collecting(Protocol):
    """What both collectors (in this process, or in its own) answer alike."""

    def start(self) -> None: ...

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...


C = TypeVar("C", bound=_Collecting)


class _Learning(Generic[C]):
    """The parts both schedules share: updates owed, replay, reward statistics, the pacer, and
    the collector's start, restore and snapshot."""

    def __init__(
        self,
        config: TrainConfig,
        learner: Learner,
        replay: EpisodeReplay,
        pacer: UpdatePacer,
        collector: C,
    ) -> None:
        self.config = config
        self.learner = learner
        self.replay = replay
        self.pacer = pacer
        self.collector = collector

    def start(self) -> None:
        self.collector.start()

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.collector.restore(state, arrays)

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.collector.snapshot()

    def run_updates(self, env_steps: int, total: int) -> dict[str, float]:
        """The updates owed at a vector step starting at ``env_steps`` (learning rate set first)."""
        cfg = self.config
        self.learner.set_learning_rate(cfg.learning_rate_at(env_steps, total))
        info: dict[str, float] = {}
        for _ in range(self.pacer.due()):
            info = self.learner.update(self.replay.sample(cfg.batch_size))
        return info

    def episodes_stored(self, rewards: np.ndarray, lengths: list[int]) -> None:
        """Bookkeeping after one vector step's finished episodes entered replay."""
        self.learner.reward_stats.update(rewards)
        self.pacer.episodes_finished(
            lengths, learning=len(self.replay) >= self.config.min_episodes_to_learn
        )


class InlineSchedule(_Learning[Collector]):
    """One vector step per `advance`, updates while the envs step (see the module docstring)."""

    background_evaluation = False

    @property
    def venv(self) -> VectorTeamEnv:
        return self.collector.venv

    def begin_evaluation(self, tag: int, weights: dict[str, np.ndarray]) -> None:
        raise TrainError("the inline schedule evaluates in the trainer's process, not beside it")

    def finish_evaluation(self) -> tuple[int, list[EpisodeStats]] | None:
        return None

    def advance(self, env_steps: int, total: int) -> Progress:
        epsilon = self.config.epsilon(env_steps)
        self.venv.step_async(self.collector.act(epsilon))  # workers step while the learner updates
        info = self.run_updates(env_steps, total)
        finished = self.collector.record(self.venv.step_wait(), self.replay)
        if finished:
            self.episodes_stored(self.collector.last_rewards, [e.length for e in finished])
        return Progress(self.collector.n_envs, finished, epsilon, info, 0)

    def close(self) -> None:
        self.venv.close()


class OverlappedSchedule(_Learning[CollectorProcess]):
    """One round per `advance`: the collector process steps while the learner updates."""

    background_evaluation = True

    def begin_evaluation(self, tag: int, weights: dict[str, np.ndarray]) -> None:
        self.collector.begin_evaluation(tag, weights)

    def finish_evaluation(self) -> tuple[int, list[EpisodeStats]] | None:
        return self.collector.finish_evaluation()

    def advance(self, env_steps: int, total: int) -> Progress:
        cfg, n_envs = self.config, self.collector.n_envs
        # Rounds lie on a fixed grid of overlap_round_steps vector steps from the run's start, so
        # a run stopped at a round boundary (a checkpoint, Ctrl-C, max_seconds) and resumed meets
        # the same boundaries as one never stopped. The last round ends at the first vector step
        # that reaches total, as inline.
        round_steps = cfg.overlap_round_steps
        n_steps = round_steps - (env_steps // n_envs) % round_steps
        n_steps = max(min(n_steps, math.ceil((total - env_steps) / n_envs)), 1)
        acting = self.learner.updates
        self.collector.begin_round(weights_of(self.learner.agent_net), env_steps, n_steps)
        info: dict[str, float] = {}
        for i in range(n_steps):
            info = self.run_updates(env_steps + i * n_envs, total) or info
        result = self.collector.end_round()
        episodes = result.episodes
        start = 0
        for k in result.waves[result.waves > 0].tolist():
            rows = np.arange(start, start + k)
            self.replay.add(episodes, rows)
            filled = episodes.filled[start : start + k]
            self.episodes_stored(
                episodes.reward[start : start + k][filled], result.lengths[rows].tolist()
            )
            start += k
        finished = [
            EpisodeStats(float(r), int(n), bool(t))
            for r, n, t in zip(result.returns, result.lengths, result.terminated, strict=True)
        ]
        lag = self.learner.updates - acting
        return Progress(
            n_steps * n_envs, finished, cfg.epsilon(env_steps), info, lag, result.evaluation
        )

    def close(self) -> None:
        self.collector.close()
