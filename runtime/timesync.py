"""Clock offset between an agent and mission control, estimated over the connection they share.

Mission control says "episode 4 starts at T" on its own clock; each agent turns T into its own
``time.monotonic()`` time with an offset estimated the way NTP does: the agent notes ``t0`` when it
sends a probe, mission control stamps ``t1`` (received) and ``t2`` (answered) on its clock, the
agent notes ``t3`` when the answer arrives. Then

    offset = ((t1 - t0) + (t2 - t3)) / 2      (mission clock minus agent clock)
    delay  = (t3 - t0) - (t2 - t1)            (the round trip on the wire)

and the true offset lies within ``delay / 2`` of the estimate. Queueing only ever adds delay, so
of the recent probes the one with the smallest delay gives the best estimate (`OffsetEstimator`).
No torch, no grpc: the carriers send the probes.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """One probe's four times (t0 and t3 on the agent's clock, t1 and t2 on mission control's)."""

    t0: float
    t1: float
    t2: float
    t3: float

    @property
    def offset(self) -> float:
        """Mission control's clock minus the agent's, by this probe."""
        return ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2.0

    @property
    def delay(self) -> float:
        """Round trip on the wire (mission control's own handling time removed)."""
        return (self.t3 - self.t0) - (self.t2 - self.t1)


class OffsetEstimator:
    """The offset from the best of the last ``window`` probes (smallest delay)."""

    def __init__(self, window: int = 16) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1; found {window}")
        self._probes: collections.deque[Probe] = collections.deque(maxlen=window)

    def add(self, probe: Probe) -> None:
        """Add a probe; one with a negative delay (clocks that jumped) is ignored."""
        if probe.delay >= 0 and all(
            math.isfinite(x) for x in (probe.t0, probe.t1, probe.t2, probe.t3)
        ):
            self._probes.append(probe)

    @property
    def ready(self) -> bool:
        return bool(self._probes)

    def best(self) -> Probe:
        if not self._probes:
            raise LookupError("no clock probe yet: the offset is unknown")
        return min(self._probes, key=lambda p: p.delay)

    @property
    def offset(self) -> float:
        """Mission control's clock minus this agent's clock, in seconds."""
        return self.best().offset

    @property
    def error_bound(self) -> float:
        """The true offset is within this many seconds of `offset`."""
        return self.best().delay / 2.0

    def to_local(self, mission_time: float) -> float:
        """A time on mission control's clock, on this agent's clock."""
        return mission_time - self.offset

    def to_mission(self, local_time: float) -> float:
        return local_time + self.offset
