"""The exception family of `qmix_edge.envs`."""

from __future__ import annotations


class EnvError(ValueError):
    """An environment could not be made or used: the message says what was expected and what to do."""


class UnsupportedEnvError(EnvError):
    """The environment exists but is not a cooperative discrete-action team task we can train."""
