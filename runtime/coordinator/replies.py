"""Where a reply is accepted or discarded: the `StepWindow` of the one team step in flight.

A StepReply is kept only if it answers the step in flight, from a seat that was sent it and has
not answered yet; anything else (late, stale, replayed, from the future) is discarded and counted
late, never applied to another step. A kept reply whose action is out of range or masked is
counted invalid, and the step clock's legal-action rule replaces it.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..legal import is_allowed
from ..proto.v1 import team_pb2 as pb
from .sessions import Session
from .summary import AgentCounters

log = logging.getLogger(__name__)


@dataclass
class StepWindow:
    """The one step whose replies are being collected."""

    episode_id: int
    step: int
    expected: set[int]
    """Seats sent this step that may still answer."""
    masks: dict[int, np.ndarray]
    """Seat -> the action mask its reply is checked against (simulation)."""
    done: asyncio.Future[None]
    """Set once every expected seat answered (or the step clock's deadline passed)."""
    replies: dict[int, pb.StepReply] = field(default_factory=dict)
    invalid: set[int] = field(default_factory=set)
    late: dict[int, int] = field(default_factory=dict)
    """Seat -> replies discarded while this step was in flight."""

    def accept(
        self,
        s: Session,
        reply: pb.StepReply,
        n_actions: int,
        counters: Mapping[str, AgentCounters],
    ) -> None:
        """Keep ``reply`` if it answers this step, else discard it and count it late; an action
        not allowed (out of ``[0, n_actions)`` or masked) is counted invalid."""
        i = s.agent_index
        if (
            s.ended
            or reply.episode_id != self.episode_id
            or reply.step != self.step
            or i not in self.expected
            or i in self.replies
            or i in self.invalid
        ):
            counters[s.agent_id].late_replies += 1
            self.late[i] = self.late.get(i, 0) + 1
            log.debug(
                "discarded reply of %s for episode %d step %d (now %s)",
                s.agent_id,
                reply.episode_id,
                reply.step,
                (self.episode_id, self.step),
            )
            return
        a = reply.action
        if not is_allowed(a, n_actions, self.masks.get(i)):
            self.invalid.add(i)
            c = counters[s.agent_id]
            c.invalid_actions += 1
            # Once per agent at WARNING: a hostile agent must not flood the log either.
            log.log(
                logging.WARNING if c.invalid_actions == 1 else logging.DEBUG,
                "agent %s answered action %d at episode %d step %d, which is %s; replaced by the "
                "legal-action rule (further invalid replies of this agent are logged at DEBUG)",
                s.agent_id,
                a,
                self.episode_id,
                self.step,
                "masked" if 0 <= a < n_actions else f"outside [0, {n_actions})",
            )
        else:
            self.replies[i] = reply
        self.check_complete()

    def check_complete(self) -> None:
        if len(self.replies) + len(self.invalid) >= len(self.expected) and not self.done.done():
            self.done.set_result(None)

    def drop(self, index: int) -> None:
        """Seat ``index`` will not answer (its session ended, its link is gone): stop waiting."""
        if index in self.expected and index not in self.replies:
            self.expected.discard(index)
            self.check_complete()
