"""Centralised training of cooperative teams: QMIX, VDN and independent Q-learning (needs torch).

Modules, one idea each: `config` (TrainConfig: every hyperparameter and its unit), `registry` (the
mixers and agent networks by name, and `build_models`), `networks` (agent utility networks),
`mixers` (QMIX / VDN mixing), `replay` (episode replay), `learner` (the TD update), `pacer` (when
updates run: the update ratio), `collector` (batched acting in vector envs, greedy evaluation),
`run_envs` (which engine steps the run's envs, and making them), `finite` (NaN/inf guards on env
inputs and checkpoint tensors), `run_files` (the run directory's files, written atomically),
`checkpoint` (atomic checkpoints, exact resume, `load_run` for the exporter), `metrics` (JSONL,
TensorBoard, the learning-curve picture), `trainer` (the loop), `cli` (``qmix-train``), `sweep`,
`sweep_report` and `sweep_cli` (``qmix-sweep``).
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
