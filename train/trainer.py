"""The training loop: `Trainer` ties envs, collector, replay, learner, metrics and checkpoints.

    trainer = Trainer("qmix", env="simple_spread", seed=42, config={"hidden_dim": 64})
    metrics = trainer.train(total_timesteps=50_000)   # metrics["mean_reward"]: greedy eval return

One iteration of the loop (the order is fixed, so sync and subprocess envs give identical runs):

    1. the schedule (`schedule`) collects and learns: inline, one vector step (the collector picks
       every env's joint action in one batched forward, the envs step, in worker processes when
       ``vector`` is subprocess or in one array call when it is batched, while the learner runs the
       updates owed: ``updates_per_episode`` per finished episode, or one per
       ``env_steps_per_update`` env steps, once replay holds ``min_episodes_to_learn`` episodes);
       overlapped (``overlap``), one round of vector steps in the collector process while the
       learner updates here;
    2. finished episodes go to replay and their envs restart with new seeds;
    3. at interval crossings: metrics, greedy evaluation, checkpoint.

Random streams: ``seed`` seeds torch (network initialisation) and a numpy SeedSequence whose children
drive exploration, env reset seeds, replay sampling and the fixed evaluation seeds. All of them,
the counters and the in-progress episodes are checkpointed, so a resumed run reproduces the metrics
of an uninterrupted one. Ctrl-C stops at the end of the current iteration and writes a checkpoint.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qmix_edge.envs import EnvSpec, VectorTeamEnv, make_env
from qmix_edge.version import __version__

from . import checkpoint as ckpt
from .collector import SEED_HIGH, Collector, EpisodeStats
from .collector_process import CollectorProcess, weights_of
from .config import TrainConfig, save_config
from .errors import CheckpointError, ConfigError, NonFiniteError, RunDirWriteError, TrainError
from .evaluations import Evaluations
from .learner import Learner
from .metrics import MetricsLogger
from .pacer import UpdatePacer
from .registry import build_models
from .replay import EpisodeReplay
from .run_envs import choose_vector_kind, make_eval_envs, make_train_envs
from .run_files import atomic_write_json, default_run_dir, read_saved_config, write_error
from .schedule import InlineSchedule, OverlappedSchedule, Schedule

logger = logging.getLogger(__name__)

RESUME_MUTABLE = frozenset(
    {
        "eval_interval",
        "eval_episodes",
        "log_interval",
        "checkpoint_interval",
        "torch_threads",
        "vector",
        "overlap",
        "overlap_round_steps",
        "learning_rate",
        "grad_norm_clip",
    }
)
"""Config keys a resumed run may change: they touch neither the networks nor the random streams.

``learning_rate`` and ``grad_norm_clip`` may change so that a run stopped by a non-finite loss can
continue from its last good checkpoint with a gentler update."""


class Trainer:
    """Centralised training of a team with QMIX, VDN or IQL (see the module docstring).

    Args:
        algo: ``"qmix"``, ``"vdn"`` or ``"iql"`` (overrides ``config["algo"]``).
        env: environment id (overrides ``config["env"]``); see `qmix_edge.envs.make_env`.
        seed: run seed (overrides ``config["seed"]``).
        config: a `TrainConfig` or a mapping of its fields (unknown keys are an error).
        run_dir: where the run is written (default ``runs/<algo>-<env>-s<seed>-<time>``). A folder
            that already holds a run is refused unless ``resume`` is set.
        resume: continue the run in ``run_dir`` from its latest checkpoint; its saved config is used
            (``config`` entries, if given, must not change the networks' shapes).
    """

    def __init__(
        self,
        algo: str | None = None,
        env: str | None = None,
        seed: int | None = None,
        config: TrainConfig | Mapping[str, Any] | None = None,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
    ) -> None:
        self.resume_checkpoint: Path | None = None
        """The checkpoint a resumed run continues from (the newest complete one)."""
        self.stop_record: dict[str, Any] | None = None
        """Why the resumed run had stopped (`checkpoint.write_stop_record`), or None."""
        overrides: dict[str, Any] = {}
        if algo is not None:
            overrides["algo"] = algo
        if env is not None:
            overrides["env"] = env
        if seed is not None:
            overrides["seed"] = seed
        if resume:
            if run_dir is None:
                raise ConfigError("resume needs run_dir: the folder of the run to continue")
            saved = read_saved_config(Path(run_dir))
            given = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
            changes = {**given, **overrides}
            fixed = sorted(
                k for k, v in changes.items() if k not in RESUME_MUTABLE and saved.get(k, v) != v
            )
            if fixed:
                raise ConfigError(
                    f"cannot change {fixed} when resuming (the run was trained with "
                    f"{ {k: saved.get(k) for k in fixed} }); only {sorted(RESUME_MUTABLE)} may change"
                )
            self.config = TrainConfig.from_dict({**saved, **changes})
            self.resume_checkpoint = ckpt.resume_point(Path(run_dir))
            self.stop_record = ckpt.read_stop_record(Path(run_dir))
        elif isinstance(config, TrainConfig):
            self.config = config.replace(**overrides) if overrides else config
        else:
            self.config = TrainConfig.from_dict({**dict(config or {}), **overrides})
        self.resuming = resume
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(self.config)
        if not resume and (self.run_dir / "run.json").exists():
            raise ConfigError(
                f"{self.run_dir} already holds a run; pass resume=True (--resume) to continue it or "
                "choose another run directory"
            )

        cfg = self.config
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        probe = make_env(  # made once here: bad ids and spaces fail before anything is written
            cfg.env,
            n_agents=cfg.n_agents,
            team_reward=cfg.team_reward,
            episode_limit=cfg.episode_limit,
            env_kwargs=dict(cfg.env_kwargs),
        )
        self.spec: EnvSpec = probe.spec
        probe.close()
        if self.spec.n_agents != cfg.n_agents:
            # A fixed team (simple_speaker_listener, the matrix games) or env_kwargs' own N: the
            # run records, and its envs are made with, the team size it really has.
            self.config = cfg = cfg.replace(n_agents=self.spec.n_agents)
        self.episode_limit = self.spec.episode_limit
        self.buffer_episodes = cfg.buffer_episodes(self.episode_limit)

        # Random streams: torch for initialisation, numpy children for everything else.
        torch.manual_seed(cfg.seed)
        streams = np.random.SeedSequence(cfg.seed).spawn(4)
        action_rng, env_seed_rng, replay_rng, eval_rng = (np.random.default_rng(s) for s in streams)
        self.eval_seeds = eval_rng.integers(0, SEED_HIGH, size=cfg.eval_episodes).tolist()

        self.agent_net, self.mixer = build_models(cfg, self.spec)
        self.learner = Learner(cfg, self.agent_net, self.mixer)
        s = self.spec
        self.replay = EpisodeReplay(
            self.buffer_episodes,
            self.episode_limit,
            s.n_agents,
            s.max_obs_dim,
            s.state_dim,
            s.max_n_actions,
            replay_rng,
        )
        self._action_rng, self._env_seed_rng = action_rng, env_seed_rng
        self.env_steps = 0
        self.episodes = 0
        self.pacer = UpdatePacer(
            cfg.updates_per_episode, cfg.n_envs, self.episode_limit, cfg.env_steps_per_update
        )
        self.wall_offset = 0.0  # wall seconds of earlier sessions of this run
        self.run_id = uuid.uuid4().hex
        self.last_checkpoint_step = -1
        self._carry: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
        self._stop_requested = False
        self.vector_kind = choose_vector_kind(self.config)
        if cfg.vector != self.vector_kind:  # the saved config names the engine that stepped
            self.config = cfg.replace(vector=self.vector_kind)
        self.evaluations = Evaluations(self.run_dir, self.config, self.spec, self.eval_seeds)
        # A background evaluation in flight: its env step, wall seconds and networks.
        self._pending_eval: tuple[int, float, dict[str, dict[str, torch.Tensor]]] | None = None

    # --- checkpoints ------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir)
        atomic_write_json(self.run_dir / "spec.json", self.spec.to_dict())
        atomic_write_json(
            self.run_dir / "run.json",
            {
                "run_id": self.run_id,
                "package_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "algo": self.config.algo,
                "env": self.config.env,
            },
        )

    def save_checkpoint(self, schedule: Schedule, wall_seconds: float) -> Path:
        """Write a full checkpoint (networks, optimizer, replay, RNG streams, pending episodes)."""
        collector_state, collector_arrays = schedule.snapshot()
        state = {
            "run_id": self.run_id,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "updates": self.learner.updates,
            "pacer": self.pacer.state_dict(),
            "reward_stats": self.learner.reward_stats.state_dict(),
            "wall_seconds": wall_seconds,
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "replay": self.replay.state_dict(),
            "collector": collector_state,
            "last_eval": self.last_eval,
        }
        model = {"learner": self.learner.state_dict(), "torch_rng": torch.get_rng_state()}
        folder = ckpt.write_checkpoint(
            self.run_dir,
            self.env_steps,
            model,
            state,
            write_replay=self.replay.save_arrays,
            write_collector=lambda f: _savez(f, collector_arrays),
        )
        self.last_checkpoint_step = self.env_steps
        logger.info("checkpoint written: %s", folder)
        return folder

    def _restore(self, collector: Schedule) -> None:
        folder = self.resume_checkpoint
        assert folder is not None  # set by __init__ when resuming
        state = ckpt.read_state(folder)
        model = ckpt.read_model(folder)
        for name in (ckpt.REPLAY_FILE, ckpt.COLLECTOR_FILE):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder / name} is missing: the checkpoint cannot resume")
        if self.spec.to_dict() != state["spec"]:
            raise CheckpointError(
                f"the environment now has spec {self.spec.to_dict()} but the run was trained on "
                f"{state['spec']}; resume with the same env and env_kwargs"
            )
        self.run_id = state["run_id"]
        self.env_steps = int(state["env_steps"])
        self.episodes = int(state["episodes"])
        self.pacer.load_state_dict(state["pacer"])
        self.learner.reward_stats.load_state_dict(state["reward_stats"])
        self.wall_offset = float(state["wall_seconds"])
        self.evaluations.restore(state.get("last_eval", {}))
        self.learner.load_state_dict(model["learner"], int(state["updates"]))
        torch.set_rng_state(model["torch_rng"])
        self.replay.load_state_dict(state["replay"])
        self.replay.load_arrays(folder / ckpt.REPLAY_FILE)
        with np.load(folder / ckpt.COLLECTOR_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        collector.restore(state["collector"], arrays)
        ckpt.remove_run_checkpoints_after(self.run_dir, self.env_steps)
        if self.stop_record is not None:
            stopped = self.stop_record
            logger.warning(
                "the run had stopped at %s env steps (%s); resuming from the last good checkpoint %s",
                stopped.get("env_steps"),
                stopped.get("error"),
                folder.name,
            )
            ckpt.clear_stop_record(self.run_dir)
        logger.info(
            "resumed %s at %d env steps, %d episodes, %d updates",
            folder,
            self.env_steps,
            self.episodes,
            self.learner.updates,
        )

    # --- the loop ---------------------------------------------------------------------------------
    def train(self, total_timesteps: int, *, max_seconds: float | None = None) -> dict[str, Any]:
        """Train until ``total_timesteps`` env steps in all (a resumed run counts its earlier steps).

        ``max_seconds`` ends this call earlier, at the first vector step (or overlapped round)
        after that many wall seconds of it, start-up included (then the final evaluation and
        checkpoint run as usual); schedules (epsilon, a linear learning rate decaying over the
        run) still span ``total_timesteps``. Metric records carry the run's wall seconds, counted
        from the start of each call (start-up and evaluations included).

        Returns ``mean_reward`` (greedy evaluation team return, mean over ``eval_episodes``),
        ``std_reward``, ``episodes``, ``env_steps``, ``updates``, ``wall_time_s``, ``steps_per_s``
        (this session), ``run_dir``.
        """
        if (
            isinstance(total_timesteps, bool)
            or not isinstance(total_timesteps, int)
            or total_timesteps < 1
        ):
            raise ConfigError(
                f"total_timesteps must be a positive integer; found {total_timesteps!r}"
            )
        if max_seconds is not None and not (
            isinstance(max_seconds, int | float) and max_seconds > 0
        ):
            raise ConfigError(
                f"max_seconds must be a positive number or None; found {max_seconds!r}"
            )
        started = time.perf_counter()  # the session's wall clock: start-up counts
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.run_dir, None, e, what="the run directory") from e
        if not self.resuming:
            self._write_run_files()
        collector = self._schedule()  # before any thread of ours: the collector may fork
        try:
            eval_venv = make_eval_envs(self.config)
        except BaseException:
            collector.close()
            raise
        metrics: MetricsLogger | None = None
        try:
            if self.resuming:
                self._restore(collector)
                metrics = MetricsLogger(self.run_dir, purge_step=self.env_steps + 1)
                metrics.truncate_after(self.env_steps)
                metrics.load_eval_history()
                self.resuming = False
            elif self._carry is not None:  # a second train() call continues in memory
                collector.restore(*self._carry)
                metrics = MetricsLogger(self.run_dir)
                metrics.load_eval_history()
            else:
                collector.start()
                metrics = MetricsLogger(self.run_dir)
                # Every curve starts at step 0.
                self._evaluate(eval_venv, metrics, time.perf_counter() - started)
            with _stop_on_sigint(self):
                return self._loop(
                    total_timesteps, collector, eval_venv, metrics, started, max_seconds
                )
        except (NonFiniteError, RunDirWriteError) as e:
            # Nothing of this failure reached a checkpoint; say why for --resume.
            ckpt.write_stop_record(self.run_dir, self.env_steps, e)
            raise
        finally:
            try:
                self._carry = collector.snapshot()
            except TrainError as e:  # the collector process is gone: nothing left to carry
                logger.debug("no collector snapshot to carry: %s", e)
                self._carry = None
            if metrics is not None:
                metrics.close()
            collector.close()
            eval_venv.close()

    def _schedule(self) -> Schedule:
        """The training envs and how collection and learning take turns (`schedule`)."""
        cfg = self.config
        parts = (cfg, self.learner, self.replay, self.pacer)
        if cfg.overlap:
            remote = CollectorProcess(
                cfg,
                self.vector_kind,
                self.spec,
                self._action_rng,
                self._env_seed_rng,
                self.eval_seeds,
            )
            return OverlappedSchedule(*parts, remote)
        venv = make_train_envs(cfg, self.vector_kind, self.spec)
        local = Collector(
            venv, self.agent_net, self.episode_limit, self._action_rng, self._env_seed_rng
        )
        return InlineSchedule(*parts, local)

    def _loop(
        self,
        total: int,
        collector: Schedule,
        eval_venv: VectorTeamEnv,
        metrics: MetricsLogger,
        start_time: float,
        max_seconds: float | None = None,
    ) -> dict[str, Any]:
        cfg = self.config
        if self.env_steps >= total:
            raise ConfigError(
                f"{self.run_dir} already holds {self.env_steps} env steps, so total_timesteps="
                f"{total} leaves nothing to train (it counts every step of the run, not steps to "
                f"add); pass more than {self.env_steps}, e.g. {self.env_steps + total}"
            )
        start_steps = self.env_steps
        session_offset = self.wall_offset

        def wall() -> float:
            return session_offset + time.perf_counter() - start_time

        recent: deque[EpisodeStats] = deque(maxlen=100)
        train_info: dict[str, float] = {}
        bar = _progress_bar(total, self.env_steps)
        last_log_time, last_log_steps = time.perf_counter(), self.env_steps
        try:
            while self.env_steps < total:
                if max_seconds is not None and time.perf_counter() - start_time >= max_seconds:
                    logger.info(
                        "stopping at %d env steps: %.0f s passed", self.env_steps, max_seconds
                    )
                    break
                if self._stop_requested:
                    # Only here, between iterations, is the state consistent enough to save.
                    folder = self._checkpoint(collector, metrics, wall())
                    logger.warning(
                        "interrupted at %d env steps; checkpoint saved to %s",
                        self.env_steps,
                        folder,
                    )
                    raise KeyboardInterrupt
                progress = collector.advance(self.env_steps, total)
                epsilon = progress.epsilon
                train_info = progress.train_info or train_info
                prev_steps = self.env_steps
                self.env_steps += progress.env_steps
                self.episodes += len(progress.finished)
                recent.extend(progress.finished)
                if progress.evaluation is not None:
                    self._record_evaluation(progress.evaluation, metrics)
                if bar is not None:  # the last wave may overshoot
                    bar.update(min(progress.env_steps, max(total - bar.n, 0)))

                if _crossed(prev_steps, self.env_steps, cfg.log_interval):
                    now = time.perf_counter()
                    sps = (self.env_steps - last_log_steps) / max(now - last_log_time, 1e-9)
                    last_log_time, last_log_steps = now, self.env_steps
                    values = {"rollout/epsilon": epsilon, "time/steps_per_s": sps}
                    values["rollout/episodes"] = float(self.episodes)
                    values["train/updates"] = float(self.learner.updates)
                    values["train/learning_rate"] = self.learner.learning_rate
                    values["rollout/policy_lag"] = float(progress.policy_lag)
                    if recent:
                        values["rollout/ep_return_mean"] = float(
                            np.mean([e.team_return for e in recent])
                        )
                        values["rollout/ep_len_mean"] = float(np.mean([e.length for e in recent]))
                    values.update({f"train/{k}": v for k, v in train_info.items()})
                    metrics.log(self.env_steps, wall(), values)
                    if bar is not None:
                        bar.set_postfix(
                            ret=f"{values.get('rollout/ep_return_mean', math.nan):.1f}",
                            best_eval=f"{self.best_eval.get('return_mean', math.nan):.1f}",
                            eps=f"{epsilon:.2f}",
                            sps=f"{sps:.0f}",
                        )
                if _crossed(prev_steps, self.env_steps, cfg.eval_interval):
                    if collector.background_evaluation:
                        self._begin_evaluation(collector, metrics, wall())
                    else:
                        self._evaluate(eval_venv, metrics, wall())
                if cfg.checkpoint_interval and _crossed(
                    prev_steps, self.env_steps, cfg.checkpoint_interval
                ):
                    self._checkpoint(collector, metrics, wall())
        finally:
            if bar is not None:
                bar.close()

        self._finish_evaluation(collector, metrics)
        if self.last_eval.get("step") != self.env_steps:
            self._evaluate(eval_venv, metrics, wall())
        if self.last_checkpoint_step != self.env_steps:
            self.save_checkpoint(collector, wall())
        self.evaluations.plot(metrics, force=True)
        session_s = time.perf_counter() - start_time
        self.wall_offset = wall()
        return {
            "mean_reward": self.last_eval["return_mean"],
            "std_reward": self.last_eval["return_std"],
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "updates": self.learner.updates,
            "wall_time_s": self.wall_offset,
            "steps_per_s": (self.env_steps - start_steps) / max(session_s, 1e-9),
            "run_dir": str(self.run_dir),
        }

    def _evaluate(self, eval_venv: VectorTeamEnv, metrics: MetricsLogger, wall_s: float) -> None:
        self.evaluations.run(
            self.agent_net, self.mixer, eval_venv, metrics, self.env_steps, wall_s, self.run_id
        )

    def _begin_evaluation(self, schedule: Schedule, metrics: MetricsLogger, wall_s: float) -> None:
        """Evaluate the networks of this moment beside training (one evaluation at a time)."""
        self._finish_evaluation(schedule, metrics)
        nets = {"agent_net": _copy(self.agent_net.state_dict())}
        if self.mixer is not None:
            nets["mixer"] = _copy(self.mixer.state_dict())
        self._pending_eval = (self.env_steps, wall_s, nets)
        schedule.begin_evaluation(self.env_steps, weights_of(self.agent_net))

    def _finish_evaluation(self, schedule: Schedule, metrics: MetricsLogger) -> None:
        """Complete and record a background evaluation still running (before a checkpoint, a
        new evaluation, the end of a session: the run's records do not depend on timing)."""
        done = schedule.finish_evaluation()
        if done is not None:
            self._record_evaluation(done, metrics)

    def _record_evaluation(
        self, done: tuple[int, list[EpisodeStats]], metrics: MetricsLogger
    ) -> None:
        tag, stats = done
        assert self._pending_eval is not None and self._pending_eval[0] == tag
        step, wall_s, nets = self._pending_eval
        self._pending_eval = None
        self.evaluations.record(stats, metrics, step, wall_s, nets, self.run_id)

    def _checkpoint(self, schedule: Schedule, metrics: MetricsLogger, wall_s: float) -> Path:
        self._finish_evaluation(schedule, metrics)
        return self.save_checkpoint(schedule, wall_s)

    @property
    def last_eval(self) -> dict[str, float]:
        """The latest greedy evaluation: its env ``step``, ``return_mean`` and ``return_std``."""
        return self.evaluations.last

    @property
    def best_eval(self) -> dict[str, float]:
        """The best greedy evaluation so far (the networks of the run's best checkpoint)."""
        return self.evaluations.best


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _savez(f: Any, arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]


def _crossed(before: int, after: int, interval: int) -> bool:
    return after // interval > before // interval


def _progress_bar(total: int, initial: int) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)


@contextmanager
def _stop_on_sigint(trainer: Trainer) -> Iterator[None]:
    """First Ctrl-C: finish the iteration, checkpoint, raise KeyboardInterrupt. Second: at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if trainer._stop_requested:
            raise KeyboardInterrupt
        trainer._stop_requested = True
        logger.warning("Ctrl-C: saving a checkpoint after this step (press again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        trainer._stop_requested = False
