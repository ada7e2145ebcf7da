"""The exception family of `qmix_edge.train`.

Every error says what was expected, what was found, and what to do. Environment problems keep the
`qmix_edge.envs` family (`EnvError`, `UnsupportedEnvError`) so callers catch one type per cause.
"""

from __future__ import annotations


class TrainError(Exception):
    """Base class of training errors."""


class ConfigError(TrainError, ValueError):
    """A training configuration value, key or file is invalid (CLI exit code 2)."""


class CheckpointError(TrainError):
    """A run directory or checkpoint is missing, incomplete or inconsistent."""
