"""The contract between the agent's runner and its carriers, in both directions.

- `Carrier`: what the runner asks of a carrier (one session at a time, stop, close); the runner
  never knows which transport it holds.
- `SessionHost`: what a carrier asks of the runner (the Join to send, the JoinReply to accept,
  each coordinator message to handle, whether it is stopping); a carrier never sees the concrete
  `AgentRunner`.
- `Link`: the fixed facts of the way to the coordinator (TLS, token, sizes, timeouts) a carrier
  dials with.
- `SessionOutcome`: how a session ended (`SessionEnd`, and why, for the logs).

Must not import grpc (a lane-only agent loads this module) nor torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ... import wire
from ...lane import LaneClient
from ...proto.v1 import team_pb2 as pb
from ...security import ClientTls


class SessionEnd(enum.Enum):
    """How one session with the coordinator ended (what the runner does next)."""

    FINISHED = "finished"
    """The coordinator finished the run: the agent exits with success."""
    SERVED = "served"
    """The step exchange ran, then ended: reconnect at once (the backoff starts over)."""
    STOPPED = "stopped"
    """The agent was told to stop."""
    REFUSED = "refused"
    """The coordinator refused this session with a status retrying may fix (e.g. the seat is
    still held): reconnect with backoff."""
    FAILED = "failed"
    """The session never reached the step exchange (unreachable, broke before any message):
    reconnect with backoff."""


@dataclass(frozen=True)
class SessionOutcome:
    """How a session ended, and why (for the logs)."""

    end: SessionEnd
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.end.value}: {self.detail}" if self.detail else self.end.value


FINISHED = SessionOutcome(SessionEnd.FINISHED)
SERVED = SessionOutcome(SessionEnd.SERVED)
STOPPED = SessionOutcome(SessionEnd.STOPPED)


def failed(why: str) -> SessionOutcome:
    """A session that never reached the step exchange, because ``why``."""
    return SessionOutcome(SessionEnd.FAILED, why)


@dataclass(frozen=True)
class Link:
    """How this agent reaches its coordinator, whichever carrier dials."""

    agent_id: str
    tls: ClientTls | None = None
    """Dial over TLS (with a client certificate: mutual TLS)."""
    token: str = ""
    """This agent's bearer token ("" = none)."""
    step_lane_address: tuple[str, int] | None = None
    """Where the step lane is dialled (None: the coordinator's host at the port its Join names)."""
    max_message_bytes: int = wire.MAX_MESSAGE_BYTES
    join_timeout_s: float = 5.0
    """How long a Join (and a lane connect) may take."""


class SessionHost(Protocol):
    """The runner as its carriers see it."""

    @property
    def stopping(self) -> bool:
        """The agent was told to stop (or the run is over)."""
        ...

    def join_request(self) -> pb.JoinRequest:
        """This agent's JoinRequest (the carrier adds the token where its transport wants it)."""
        ...

    def accept_join(self, reply: pb.JoinReply) -> None:
        """Take the coordinator's JoinReply; raises `JoinRefused` when it does not fit."""
        ...

    def on_message(self, msg: pb.CoordinatorMessage) -> pb.AgentMessage | SessionOutcome | None:
        """Handle one coordinator message: the message to answer with, the session's outcome
        when the message ends it, or None."""
        ...


class Carrier(Protocol):
    """How an `AgentRunner` reaches its coordinator: one session at a time."""

    @property
    def lane(self) -> LaneClient | None:
        """The step lane of the session under way, if it steps on one."""
        ...

    def session(self) -> SessionOutcome:
        """Join and run the step exchange until it ends; raises `JoinRefused` when the
        coordinator refused the Join with a status the caller must judge."""
        ...

    def stop(self) -> None:
        """Leave and end the open session soon (thread-safe, signal-safe, never blocks)."""
        ...

    def close(self) -> None:
        """Release what the carrier holds (after the last session)."""
        ...
