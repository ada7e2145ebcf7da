"""How an agent reaches its coordinator: one `Carrier` per transport, behind one contract.

- `contract`: the Protocols in both directions (`Carrier` for the runner, `SessionHost` for the
  carriers), the `Link` they dial with, and how a session ends (`SessionOutcome`);
- `lane`: the step exchange on the step lane, and the lane-only carrier (no gRPC);
- `grpc`: Join and Leave over gRPC, steps on the lane or the Steps stream. Imported only by agents
  that dial gRPC, so this package does not re-export it.
"""

from __future__ import annotations

from .contract import (
    Carrier,
    Link,
    SessionEnd,
    SessionHost,
    SessionOutcome,
)
from .lane import LaneCarrier, LaneExchange

__all__ = [
    "Carrier",
    "LaneCarrier",
    "LaneExchange",
    "Link",
    "SessionEnd",
    "SessionHost",
    "SessionOutcome",
]
