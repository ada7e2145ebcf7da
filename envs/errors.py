"""The exception family of `qmix_edge.envs`, and the "did you mean" hint its messages share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EnvError(ValueError):
    """An environment could not be made or used: the message says what was expected and what to do."""


class UnsupportedEnvError(EnvError):
    """The environment exists but is not a cooperative discrete-action team task we can train."""


def did_you_mean(found: str, candidates: Iterable[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``candidates`` to ``found`` (difflib), else ``""``.

    Appended to messages about an unknown name (env ids, config keys), so a typo's fix is on the
    line the user reads."""
    close = difflib.get_close_matches(found, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
