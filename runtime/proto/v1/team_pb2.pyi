from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProtocolVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_VERSION_UNSPECIFIED: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_1: _ClassVar[ProtocolVersion]
    PROTOCOL_VERSION_2: _ClassVar[ProtocolVersion]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_BOOL: _ClassVar[DType]
    DTYPE_INT64: _ClassVar[DType]

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_SIMULATION: _ClassVar[Mode]
    MODE_FIELD: _ClassVar[Mode]

class GoodbyeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GOODBYE_REASON_UNSPECIFIED: _ClassVar[GoodbyeReason]
    GOODBYE_REASON_RUN_FINISHED: _ClassVar[GoodbyeReason]
    GOODBYE_REASON_SHUTDOWN: _ClassVar[GoodbyeReason]
    GOODBYE_REASON_LEASE_EXPIRED: _ClassVar[GoodbyeReason]
    GOODBYE_REASON_REFUSED: _ClassVar[GoodbyeReason]
PROTOCOL_VERSION_UNSPECIFIED: ProtocolVersion
PROTOCOL_VERSION_1: ProtocolVersion
PROTOCOL_VERSION_2: ProtocolVersion
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_BOOL: DType
DTYPE_INT64: DType
MODE_UNSPECIFIED: Mode
MODE_SIMULATION: Mode
MODE_FIELD: Mode
GOODBYE_REASON_UNSPECIFIED: GoodbyeReason
GOODBYE_REASON_RUN_FINISHED: GoodbyeReason
GOODBYE_REASON_SHUTDOWN: GoodbyeReason
GOODBYE_REASON_LEASE_EXPIRED: GoodbyeReason
GOODBYE_REASON_REFUSED: GoodbyeReason

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("protocol_version", "agent_id", "artifact_sha256", "client_name", "step_lane", "token")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_LANE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    protocol_version: ProtocolVersion
    agent_id: str
    artifact_sha256: str
    client_name: str
    step_lane: bool
    token: str
    def __init__(self, protocol_version: _Optional[_Union[ProtocolVersion, str]] = ..., agent_id: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., client_name: _Optional[str] = ..., step_lane: _Optional[bool] = ..., token: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("session_id", "team_id", "coordinator_instance", "mode", "agent_index", "n_agents", "fallback_action", "step_deadline_ms", "lease_steps", "step_period_ms", "episode_limit", "obs_dim", "n_actions", "current_episode_id", "step_lane_port")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    N_AGENTS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ACTION_FIELD_NUMBER: _ClassVar[int]
    STEP_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    EPISODE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    OBS_DIM_FIELD_NUMBER: _ClassVar[int]
    N_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_LANE_PORT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    team_id: str
    coordinator_instance: str
    mode: Mode
    agent_index: int
    n_agents: int
    fallback_action: int
    step_deadline_ms: int
    lease_steps: int
    step_period_ms: int
    episode_limit: int
    obs_dim: int
    n_actions: int
    current_episode_id: int
    step_lane_port: int
    def __init__(self, session_id: _Optional[str] = ..., team_id: _Optional[str] = ..., coordinator_instance: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., agent_index: _Optional[int] = ..., n_agents: _Optional[int] = ..., fallback_action: _Optional[int] = ..., step_deadline_ms: _Optional[int] = ..., lease_steps: _Optional[int] = ..., step_period_ms: _Optional[int] = ..., episode_limit: _Optional[int] = ..., obs_dim: _Optional[int] = ..., n_actions: _Optional[int] = ..., current_episode_id: _Optional[int] = ..., step_lane_port: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("attach", "step_reply", "join", "leave")
    ATTACH_FIELD_NUMBER: _ClassVar[int]
    STEP_REPLY_FIELD_NUMBER: _ClassVar[int]
    JOIN_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    attach: Attach
    step_reply: StepReply
    join: JoinRequest
    leave: LeaveRequest
    def __init__(self, attach: _Optional[_Union[Attach, _Mapping]] = ..., step_reply: _Optional[_Union[StepReply, _Mapping]] = ..., join: _Optional[_Union[JoinRequest, _Mapping]] = ..., leave: _Optional[_Union[LeaveRequest, _Mapping]] = ...) -> None: ...

class Attach(_message.Message):
    __slots__ = ("session_id", "token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    token: str
    def __init__(self, session_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("episode_id", "step", "action", "decision_us", "is_fallback", "report")
    class ReportEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECISION_US_FIELD_NUMBER: _ClassVar[int]
    IS_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    episode_id: int
    step: int
    action: int
    decision_us: int
    is_fallback: bool
    report: _containers.ScalarMap[str, float]
    def __init__(self, episode_id: _Optional[int] = ..., step: _Optional[int] = ..., action: _Optional[int] = ..., decision_us: _Optional[int] = ..., is_fallback: _Optional[bool] = ..., report: _Optional[_Mapping[str, float]] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("episode_start", "step_request", "episode_end", "goodbye", "join_reply", "attached")
    EPISODE_START_FIELD_NUMBER: _ClassVar[int]
    STEP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    EPISODE_END_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    JOIN_REPLY_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    episode_start: EpisodeStart
    step_request: StepRequest
    episode_end: EpisodeEnd
    goodbye: Goodbye
    join_reply: JoinReply
    attached: Attached
    def __init__(self, episode_start: _Optional[_Union[EpisodeStart, _Mapping]] = ..., step_request: _Optional[_Union[StepRequest, _Mapping]] = ..., episode_end: _Optional[_Union[EpisodeEnd, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., join_reply: _Optional[_Union[JoinReply, _Mapping]] = ..., attached: _Optional[_Union[Attached, _Mapping]] = ...) -> None: ...

class Attached(_message.Message):
    __slots__ = ("session_id", "current_episode_id", "agents_attached", "n_agents")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENTS_ATTACHED_FIELD_NUMBER: _ClassVar[int]
    N_AGENTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    current_episode_id: int
    agents_attached: int
    n_agents: int
    def __init__(self, session_id: _Optional[str] = ..., current_episode_id: _Optional[int] = ..., agents_attached: _Optional[int] = ..., n_agents: _Optional[int] = ...) -> None: ...

class EpisodeStart(_message.Message):
    __slots__ = ("episode_id", "seed")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    episode_id: int
    seed: int
    def __init__(self, episode_id: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("episode_id", "step", "observation", "action_mask", "deadline_ms", "team_step", "previous_action")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_MASK_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    TEAM_STEP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ACTION_FIELD_NUMBER: _ClassVar[int]
    episode_id: int
    step: int
    observation: Tensor
    action_mask: Tensor
    deadline_ms: int
    team_step: int
    previous_action: int
    def __init__(self, episode_id: _Optional[int] = ..., step: _Optional[int] = ..., observation: _Optional[_Union[Tensor, _Mapping]] = ..., action_mask: _Optional[_Union[Tensor, _Mapping]] = ..., deadline_ms: _Optional[int] = ..., team_step: _Optional[int] = ..., previous_action: _Optional[int] = ...) -> None: ...

class EpisodeEnd(_message.Message):
    __slots__ = ("episode_id", "steps", "team_return", "reason")
    EPISODE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TEAM_RETURN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    episode_id: int
    steps: int
    team_return: float
    reason: str
    def __init__(self, episode_id: _Optional[int] = ..., steps: _Optional[int] = ..., team_return: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason", "detail", "status_code")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    reason: GoodbyeReason
    detail: str
    status_code: int
    def __init__(self, reason: _Optional[_Union[GoodbyeReason, str]] = ..., detail: _Optional[str] = ..., status_code: _Optional[int] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("session_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LeaveReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
