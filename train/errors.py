"""The exception family of `qmix_edge.train`.

Every error says what was expected, what was found, and what to do. Environment problems keep the
`qmix_edge.envs` family (`EnvError`, `UnsupportedEnvError`) so callers catch one type per cause.

``qmix-train`` maps `ConfigError` to exit code 2 and every other `TrainError` raised while training
to exit code 1, printed as one line without a traceback. The errors that stop a run part way
(`NonFiniteError`, `RunDirWriteError`) leave the last good checkpoint in place, and
``qmix-train --resume`` continues from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TrainError(Exception):
    """Base class of training errors."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling, so an error raised in the collector process
        # reaches the trainer whole (type, message and attributes).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[TrainError], args: tuple[Any, ...], state: dict[str, Any]) -> TrainError:
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


class ConfigError(TrainError, ValueError):
    """A training configuration value, key or file is invalid (CLI exit code 2)."""


class CheckpointError(TrainError):
    """A run directory or checkpoint is missing, incomplete or inconsistent."""


class NonFiniteError(TrainError):
    """A NaN or infinite value appeared where training needs finite numbers; the run stopped."""


class NonFiniteInputError(NonFiniteError):
    """An environment returned a NaN or infinite observation, state or reward.

    Raised before the value reaches the replay buffer. The attributes say where, so the episode
    can be replayed: reset the env with ``seed`` and step it ``step`` times.
    """

    def __init__(
        self, message: str, *, env_id: str, agent: str | None, field: str, step: int, seed: int
    ) -> None:
        super().__init__(message)
        self.env_id = env_id
        """The environment id the run was made with."""
        self.agent = agent
        """The agent whose value it was (None for the global state or a team-only reward)."""
        self.field = field
        """``"observation"``, ``"state"`` or ``"reward"``."""
        self.step = step
        """Env steps into the episode: 0 is the value ``reset`` returned, k the k-th ``step``'s."""
        self.seed = seed
        """The reset seed of the episode."""


class NonFiniteLossError(NonFiniteError):
    """The TD loss or the gradient norm of an update was NaN or infinite; the update was not applied."""

    def __init__(
        self, message: str, *, update: int, quantity: str, last_finite_loss: float | None
    ) -> None:
        super().__init__(message)
        self.update = update
        """The number of the update that failed (1-based: the first update is 1)."""
        self.quantity = quantity
        """``"loss"`` or ``"grad_norm"``."""
        self.last_finite_loss = last_finite_loss
        """The loss of the last applied update (None when no update had been applied)."""


class NonFiniteCheckpointError(NonFiniteError, CheckpointError):
    """A checkpoint to be written holds NaN or infinite tensors; nothing was written."""

    def __init__(self, message: str, *, tensors: list[str]) -> None:
        super().__init__(message)
        self.tensors = tensors
        """The names of the non-finite tensors (``learner/agent_net/fc1.weight``...)."""


class RunDirWriteError(TrainError):
    """A file of the run directory could not be written (disk full, read-only, no permission)."""

    def __init__(self, message: str, *, path: Path, nbytes: int | None) -> None:
        super().__init__(message)
        self.path = path
        """The file or folder being written."""
        self.nbytes = nbytes
        """How many bytes the write needed (None when not known)."""
