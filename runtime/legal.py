"""The one legal-action rule: what an agent's seat applies when its reply cannot be used.

Every action applied to an environment or an actuator must be allowed by that step's mask, whatever
an agent sends (or fails to send). The coordinator (missing, late and invalid replies), the agent's
own watchdog and decision fallback, the single-process reference of ``qmix-eval`` and its report
all apply the same rule, `legal_action`:

1. a reply that is in ``[0, n_actions)`` and allowed by the mask is applied as it is;
2. otherwise (missing, late, out of range, negative, masked) the manifest's fallback action, if the
   mask allows it;
3. otherwise the lowest-index allowed action.

``mask=None`` means every action is allowed. A mask that allows nothing leaves nothing legal to
choose: the fallback action is returned (in range) so a device still has a defined safe action; the
team environments never produce such a mask for a live agent (they allow action 0 as a placeholder).

Numpy only; must not import torch.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Verdict(StrEnum):
    """What `judge` found a reply to be."""

    APPLIED = "applied"
    """In range and allowed: applied as sent."""
    MISSING = "missing"
    """No usable reply for this step (none, late, stale): replaced."""
    INVALID = "invalid"
    """Out of range, negative or masked: replaced, and counted against the agent."""


def is_allowed(action: int, n_actions: int, mask: np.ndarray | None) -> bool:
    """Whether ``action`` is in ``[0, n_actions)`` and allowed by ``mask`` (None: all allowed)."""
    if not 0 <= action < n_actions:
        return False
    return mask is None or bool(mask[action])


def substitute(fallback_action: int, n_actions: int, mask: np.ndarray | None) -> int:
    """The action applied in place of an unusable reply: the fallback if allowed, else the
    lowest-index allowed action (the fallback when nothing at all is allowed)."""
    if is_allowed(fallback_action, n_actions, mask):
        return int(fallback_action)
    if mask is not None:
        allowed = np.flatnonzero(np.asarray(mask[:n_actions], dtype=bool))
        if allowed.size:
            return int(allowed[0])
    return int(fallback_action) if 0 <= fallback_action < n_actions else 0


def judge(
    reply: int | None, fallback_action: int, n_actions: int, mask: np.ndarray | None
) -> tuple[int, Verdict]:
    """The applied action for ``reply`` (None = missing or late) and what the reply was."""
    if reply is None:
        return substitute(fallback_action, n_actions, mask), Verdict.MISSING
    if is_allowed(int(reply), n_actions, mask):
        return int(reply), Verdict.APPLIED
    return substitute(fallback_action, n_actions, mask), Verdict.INVALID


def legal_action(
    reply: int | None, fallback_action: int, n_actions: int, mask: np.ndarray | None
) -> int:
    """The action to apply for ``reply`` under ``mask`` (see the module docstring for the rule)."""
    return judge(reply, fallback_action, n_actions, mask)[0]
