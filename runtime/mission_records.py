"""The run record's mission lines (schema 3): what ``qmix-coordinator --mode mission`` writes
beside ``run_start`` and ``run_end`` while the team flies on its own clocks.

`qmix_edge.runtime.records` owns the format (the writer, the reader, the schema check); this
module only declares the record types of mission control, one frozen dataclass each:

- ``mission`` (`MissionEvent`): an episode started, paused, resumed or ended for the whole team
- ``field_link`` (`FieldLink`): an agent's link to mission control came up or went down
- ``telemetry`` (`TelemetryReport`): an agent's loop counters (about once a second per agent)
- ``agent_record`` (`AgentRecordLine`): one line of an agent's own record, stored once
- ``rollout_offered``, ``rollout_switch``, ``rollout_switched``, ``rollout_cancelled``: a signed
  rollout of a new artifact set and how it ended

No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class MissionEvent:
    """Mission control scheduled a change of the team's phase."""

    TYPE: ClassVar[str] = "mission"
    kind: str
    """``start``, ``pause``, ``resume`` or ``end``."""
    episode_id: int
    """The episode it concerns (counted from 1 by mission control)."""
    at: float
    """When it takes effect, on mission control's monotonic clock (seconds)."""
    time: float = 0.0
    """The same instant as Unix time (seconds)."""
    episode_index: int = 0
    """The episode's index in the whole run, from 0 (stays across a resume)."""


@dataclass(frozen=True, slots=True)
class FieldLink:
    """An agent's link to mission control came up (its hello was admitted) or went down."""

    TYPE: ClassVar[str] = "field_link"
    agent_id: str
    up: bool
    version: str = ""
    """The artifact version the agent said it runs (on the way up)."""


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    """One telemetry report of an agent's loop (counters since the agent started)."""

    TYPE: ClassVar[str] = "telemetry"
    agent_id: str
    version: str
    episode_id: int
    phase: str
    ticks: int
    decisions: int
    held: int
    stale: int
    overruns: int
    skipped_ticks: int
    safety_limited: int
    safety_blocked: int
    episodes: int
    decision_us_p50: float
    decision_us_p99: float
    link_lost_s: float


@dataclass(frozen=True, slots=True)
class AgentRecordLine:
    """One line of an agent's own record (its JSON text), uploaded when linked; ``seq`` is the
    line's number in that agent's record, each stored once."""

    TYPE: ClassVar[str] = "agent_record"
    agent_id: str
    seq: int
    line: str


@dataclass(frozen=True, slots=True)
class RolloutOffered:
    """A new artifact set was offered to the team."""

    TYPE: ClassVar[str] = "rollout_offered"
    version: str
    bytes: int


@dataclass(frozen=True, slots=True)
class RolloutSwitch:
    """Every agent staged the offered set: the team switches at the start of ``at_episode``."""

    TYPE: ClassVar[str] = "rollout_switch"
    version: str
    at_episode: int


@dataclass(frozen=True, slots=True)
class RolloutSwitched:
    """The team started ``episode_id`` on ``version``."""

    TYPE: ClassVar[str] = "rollout_switched"
    version: str
    episode_id: int


@dataclass(frozen=True, slots=True)
class RolloutCancelled:
    """An agent could not stage the offered set: nobody switches."""

    TYPE: ClassVar[str] = "rollout_cancelled"
    version: str
    reason: str


MISSION_RECORD_TYPES = (
    MissionEvent,
    FieldLink,
    TelemetryReport,
    AgentRecordLine,
    RolloutOffered,
    RolloutSwitch,
    RolloutSwitched,
    RolloutCancelled,
)
