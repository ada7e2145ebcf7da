"""Centralised training of cooperative teams: QMIX, VDN and independent Q-learning (needs torch).

Modules, one idea each: `config` (TrainConfig: every hyperparameter and its unit), `networks` (agent
utility networks), `mixers` (QMIX / VDN mixing), `replay` (episode replay), `learner` (the TD
update), `pacer` (when updates run: the update ratio), `collector` (batched acting in vector envs, greedy evaluation), `finite` (NaN/inf guards
on env inputs and checkpoint tensors), `checkpoint` (atomic checkpoints, exact resume, `load_run`
for the exporter), `metrics` (JSONL, TensorBoard, the learning-curve picture), `trainer` (the
loop), `cli` (``qmix-train``).
"""

from __future__ import annotations

from .checkpoint import LoadedRun, load_run
from .config import TrainConfig
from .errors import (
    CheckpointError,
    ConfigError,
    NonFiniteCheckpointError,
    NonFiniteError,
    NonFiniteInputError,
    NonFiniteLossError,
    RunDirWriteError,
    TrainError,
)
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "LoadedRun",
    "NonFiniteCheckpointError",
    "NonFiniteError",
    "NonFiniteInputError",
    "NonFiniteLossError",
    "RunDirWriteError",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "load_run",
]
