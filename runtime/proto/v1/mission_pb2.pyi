from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClockProbe(_message.Message):
    __slots__ = ("t0", "t1", "t2")
    T0_FIELD_NUMBER: _ClassVar[int]
    T1_FIELD_NUMBER: _ClassVar[int]
    T2_FIELD_NUMBER: _ClassVar[int]
    t0: float
    t1: float
    t2: float
    def __init__(self, t0: _Optional[float] = ..., t1: _Optional[float] = ..., t2: _Optional[float] = ...) -> None: ...

class FieldReport(_message.Message):
    __slots__ = ("hello", "telemetry", "record", "rollout")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    hello: FieldHello
    telemetry: Telemetry
    record: RecordLines
    rollout: RolloutStatus
    def __init__(self, hello: _Optional[_Union[FieldHello, _Mapping]] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., record: _Optional[_Union[RecordLines, _Mapping]] = ..., rollout: _Optional[_Union[RolloutStatus, _Mapping]] = ...) -> None: ...

class FieldHello(_message.Message):
    __slots__ = ("agent_id", "version", "protocol_version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: str
    protocol_version: int
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("version", "episode_id", "phase", "ticks", "decisions", "held", "stale", "overruns", "skipped_ticks", "safety_limited", "safety_blocked", "episodes", "decision_us_p50", "decision_us_p99", "link_lost_s")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_TICKS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_LIMITED_FIELD_NUMBER: _ClassVar[int]
    SAFETY_BLOCKED_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    DECISION_US_P50_FIELD_NUMBER: _ClassVar[int]
    DECISION_US_P99_FIELD_NUMBER: _ClassVar[int]
    LINK_LOST_S_FIELD_NUMBER: _ClassVar[int]
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
    def __init__(self, version: _Optional[str] = ..., episode_id: _Optional[int] = ..., phase: _Optional[str] = ..., ticks: _Optional[int] = ..., decisions: _Optional[int] = ..., held: _Optional[int] = ..., stale: _Optional[int] = ..., overruns: _Optional[int] = ..., skipped_ticks: _Optional[int] = ..., safety_limited: _Optional[int] = ..., safety_blocked: _Optional[int] = ..., episodes: _Optional[int] = ..., decision_us_p50: _Optional[float] = ..., decision_us_p99: _Optional[float] = ..., link_lost_s: _Optional[float] = ...) -> None: ...

class RecordLines(_message.Message):
    __slots__ = ("first_seq", "lines")
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    first_seq: int
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, first_seq: _Optional[int] = ..., lines: _Optional[_Iterable[str]] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("version", "state", "detail")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[RolloutStatus.State]
        STAGED: _ClassVar[RolloutStatus.State]
        FAILED: _ClassVar[RolloutStatus.State]
        ACTIVE: _ClassVar[RolloutStatus.State]
    STATE_UNSPECIFIED: RolloutStatus.State
    STAGED: RolloutStatus.State
    FAILED: RolloutStatus.State
    ACTIVE: RolloutStatus.State
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: RolloutStatus.State
    detail: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[_Union[RolloutStatus.State, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class MissionCommand(_message.Message):
    __slots__ = ("welcome", "schedule", "offer", "switch", "record_ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    SWITCH_FIELD_NUMBER: _ClassVar[int]
    RECORD_ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    schedule: Schedule
    offer: RolloutOffer
    switch: RolloutSwitch
    record_ack: RecordAck
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., offer: _Optional[_Union[RolloutOffer, _Mapping]] = ..., switch: _Optional[_Union[RolloutSwitch, _Mapping]] = ..., record_ack: _Optional[_Union[RecordAck, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("team_id", "version", "record_next_seq")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORD_NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    version: str
    record_next_seq: int
    def __init__(self, team_id: _Optional[str] = ..., version: _Optional[str] = ..., record_next_seq: _Optional[int] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("kind", "episode_id", "at")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Schedule.Kind]
        START: _ClassVar[Schedule.Kind]
        PAUSE: _ClassVar[Schedule.Kind]
        RESUME: _ClassVar[Schedule.Kind]
        END: _ClassVar[Schedule.Kind]
    KIND_UNSPECIFIED: Schedule.Kind
    START: Schedule.Kind
    PAUSE: Schedule.Kind
    RESUME: Schedule.Kind
    END: Schedule.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    kind: Schedule.Kind
    episode_id: int
    at: float
    def __init__(self, kind: _Optional[_Union[Schedule.Kind, str]] = ..., episode_id: _Optional[int] = ..., at: _Optional[float] = ...) -> None: ...

class OfferedFile(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class RolloutOffer(_message.Message):
    __slots__ = ("version", "files")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    version: str
    files: _containers.RepeatedCompositeFieldContainer[OfferedFile]
    def __init__(self, version: _Optional[str] = ..., files: _Optional[_Iterable[_Union[OfferedFile, _Mapping]]] = ...) -> None: ...

class RolloutSwitch(_message.Message):
    __slots__ = ("version", "at_episode", "detail")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_EPISODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    version: str
    at_episode: int
    detail: str
    def __init__(self, version: _Optional[str] = ..., at_episode: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class RecordAck(_message.Message):
    __slots__ = ("next_seq",)
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    next_seq: int
    def __init__(self, next_seq: _Optional[int] = ...) -> None: ...

class ChunkRequest(_message.Message):
    __slots__ = ("version", "name", "offset", "max_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: str
    name: str
    offset: int
    max_bytes: int
    def __init__(self, version: _Optional[str] = ..., name: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("artifacts", "timeout_s")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    artifacts: str
    timeout_s: float
    def __init__(self, artifacts: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class DeployProgress(_message.Message):
    __slots__ = ("version", "agents", "switch_at_episode", "cancelled", "done")
    class AgentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    SWITCH_AT_EPISODE_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    version: str
    agents: _containers.ScalarMap[str, str]
    switch_at_episode: int
    cancelled: str
    done: bool
    def __init__(self, version: _Optional[str] = ..., agents: _Optional[_Mapping[str, str]] = ..., switch_at_episode: _Optional[int] = ..., cancelled: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...

class OperateRequest(_message.Message):
    __slots__ = ("action", "lead_s")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS: _ClassVar[OperateRequest.Action]
        PAUSE: _ClassVar[OperateRequest.Action]
        RESUME: _ClassVar[OperateRequest.Action]
        END: _ClassVar[OperateRequest.Action]
    STATUS: OperateRequest.Action
    PAUSE: OperateRequest.Action
    RESUME: OperateRequest.Action
    END: OperateRequest.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    LEAD_S_FIELD_NUMBER: _ClassVar[int]
    action: OperateRequest.Action
    lead_s: float
    def __init__(self, action: _Optional[_Union[OperateRequest.Action, str]] = ..., lead_s: _Optional[float] = ...) -> None: ...

class AgentState(_message.Message):
    __slots__ = ("linked", "version", "phase", "episode_id", "decisions", "overruns", "last_heard_s", "rollout")
    LINKED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    OVERRUNS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_S_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    linked: bool
    version: str
    phase: str
    episode_id: int
    decisions: int
    overruns: int
    last_heard_s: float
    rollout: str
    def __init__(self, linked: _Optional[bool] = ..., version: _Optional[str] = ..., phase: _Optional[str] = ..., episode_id: _Optional[int] = ..., decisions: _Optional[int] = ..., overruns: _Optional[int] = ..., last_heard_s: _Optional[float] = ..., rollout: _Optional[str] = ...) -> None: ...

class MissionState(_message.Message):
    __slots__ = ("team_id", "version", "episode_id", "phase", "at", "agents")
    class AgentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AgentState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AgentState, _Mapping]] = ...) -> None: ...
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    version: str
    episode_id: int
    phase: str
    at: float
    agents: _containers.MessageMap[str, AgentState]
    def __init__(self, team_id: _Optional[str] = ..., version: _Optional[str] = ..., episode_id: _Optional[int] = ..., phase: _Optional[str] = ..., at: _Optional[float] = ..., agents: _Optional[_Mapping[str, AgentState]] = ...) -> None: ...
