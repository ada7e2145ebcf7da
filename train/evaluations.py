"""A run's greedy evaluations: the metric records, the best checkpoint and the learning curve.

`Evaluations` runs the greedy policy on the run's fixed evaluation seeds (`collector.evaluate`, on
the env's own implementation), logs ``eval/`` records, keeps the networks of the best evaluation
so far as the run's best checkpoint (what ``qmix-export`` takes by default), and rewrites the
learning-curve picture every `PLOT_INTERVAL_S` during a session (drawing it costs more than a fast
run's evaluation, and the first drawing imports matplotlib) and always at its end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qmix_edge.envs import EnvSpec, VectorTeamEnv
from qmix_edge.envs.baselines import random_team_return

from . import checkpoint as ckpt
from .collector import EpisodeStats, evaluate
from .config import TrainConfig
from .metrics import MetricsLogger
from .networks import AgentNetwork
from .run_envs import env_factory

logger = logging.getLogger(__name__)

PLOT_INTERVAL_S = 30.0
"""Wall seconds between two rewrites of the learning-curve picture during a session."""


class Evaluations:
    """The evaluations of one run (see the module docstring)."""

    def __init__(self, run_dir: Path, config: TrainConfig, spec: EnvSpec, seeds: list[int]) -> None:
        self.run_dir = run_dir
        self.config = config
        self.spec = spec
        self.seeds = seeds
        self.last: dict[str, float] = {}
        """The latest evaluation: its env ``step``, ``return_mean`` and ``return_std``."""
        self.best: dict[str, float] = {}
        """The best evaluation so far (the networks of the best checkpoint)."""
        self._random_return: float | None = None
        self._last_plot: float | None = None  # perf_counter() of the last picture

    def restore(self, last: dict[str, float]) -> None:
        """A resumed run's latest evaluation, and its best from the best checkpoint on disk."""
        self.last = dict(last)
        folder = ckpt.best_checkpoint(self.run_dir)
        self.best = {} if folder is None else dict(ckpt.read_state(folder).get("eval", {}))

    def run(
        self,
        agent_net: AgentNetwork,
        mixer: nn.Module | None,
        venv: VectorTeamEnv,
        metrics: MetricsLogger,
        step: int,
        wall_s: float,
        run_id: str,
    ) -> None:
        """Evaluate ``agent_net`` greedily at env step ``step``; record it, keep it if best."""
        agent_net.eval()
        stats = evaluate(agent_net, venv, self.seeds, self.spec.episode_limit)
        agent_net.train()
        nets = {"agent_net": agent_net.state_dict()}
        if mixer is not None:
            nets["mixer"] = mixer.state_dict()
        self.record(stats, metrics, step, wall_s, nets, run_id)

    def record(
        self,
        stats: list[EpisodeStats],
        metrics: MetricsLogger,
        step: int,
        wall_s: float,
        nets: dict[str, dict[str, torch.Tensor]],
        run_id: str,
    ) -> None:
        """Record an evaluation of the networks ``nets`` (state dicts) as they were at env step
        ``step`` and wall second ``wall_s``; they become the best checkpoint if they beat it."""
        returns = np.array([e.team_return for e in stats])
        self.last = {
            "step": step,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
        }
        metrics.log(
            step,
            wall_s,
            {
                "eval/return_mean": float(returns.mean()),
                "eval/return_std": float(returns.std()),
                "eval/ep_len_mean": float(np.mean([e.length for e in stats])),
            },
        )
        if not self.best or self.last["return_mean"] > self.best["return_mean"]:
            self._save_best(nets, run_id)
        self.plot(metrics, force=False)
        logger.info(
            "eval at %d env steps: greedy return %.2f +- %.2f", step, returns.mean(), returns.std()
        )

    def plot(self, metrics: MetricsLogger, *, force: bool) -> None:
        """Rewrite the learning-curve picture (rate-limited unless ``force``)."""
        now = time.perf_counter()
        if self._last_plot is None:  # the first call starts the clock: no picture of one point
            self._last_plot = now
        if not self.best or (not force and now - self._last_plot < PLOT_INTERVAL_S):
            return
        self._last_plot = now
        if self._random_return is None:
            with contextlib.closing(env_factory(self.config)()) as env:
                self._random_return = random_team_return(env, self.seeds)
        cfg = self.config
        metrics.plot(
            f"{cfg.algo} on {cfg.env} (seed {cfg.seed})",
            random_return=self._random_return,
            exported_step=int(self.best["step"]),
            eval_episodes=len(self.seeds),
        )

    def _save_best(self, nets: dict[str, dict[str, torch.Tensor]], run_id: str) -> None:
        self.best = dict(self.last)
        state = {
            "run_id": run_id,
            "env_steps": int(self.best["step"]),
            "config": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "eval": self.best,
        }
        folder = ckpt.write_best(self.run_dir, {"learner": nets}, state)
        logger.info(
            "new best greedy return %.2f at %d env steps: %s",
            self.best["return_mean"],
            self.best["step"],
            folder,
        )
