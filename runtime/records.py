"""The coordinator's run record: one JSON object per line, appended as the run goes, one typed
record per line when read back.

Owns the record format: what `qmix-coordinator --record` writes (through `RecordWriter`) and what
`qmix-eval`, the benches and the tests read (through `read_records`, which yields the frozen
dataclasses below instead of dicts). Every line is a JSON object whose ``type`` names its record:

- ``run_start`` (`RunStart`): schema, coordinator_instance, team_id, mode, resumed_from, time
- ``join`` (`Join`), ``attach`` (`Attach`), ``leave`` (`Leave`): an agent's session
- ``episode_start`` (`EpisodeStart`), ``step`` (`Step`), ``episode_end`` (`EpisodeEnd`)
- ``run_end`` (`RunEnd`)
- mission control's lines (``mission``, ``field_link``, ``telemetry``, ``agent_record``,
  ``rollout_*``), declared in `qmix_edge.runtime.mission_records` (schema 3 on)

Each dataclass documents its fields. JSON names equal attribute names, except `EpisodeEnd`'s
``return`` (a Python keyword), read as ``team_return``.

Schema version: ``schema`` in every ``run_start`` (`SCHEMA_VERSION`, written by `RecordWriter`)
governs the lines after it, up to the next ``run_start`` (a resumed run appends its own). A record
without one is version 1, written before records had a version: the fields added since then
(`Join.via`, `Step.invalid`, `EpisodeEnd.absent`, the `RunEnd` verdict, ...) read as their
defaults, so an old record still resumes and reports. A file of a newer schema is refused with the
version found, so an old reader never misreads a new field.

Writing validates every record against the schema: an unknown type, an unknown field or a missing
required one is a bug of the writer and raises `RecordError` before anything is written. Only names
are checked on the write path (the step record is on the step clock's hot path); `read_records`
also checks each value's type.

Each line goes to the kernel in one ``write(2)`` when written (the file is unbuffered), so a crash
loses at most the line being written; `read_records` skips a torn last line, and a `RecordWriter`
opening a file with a torn last line (a kill -9 in the middle of a write) cuts it off before
appending, so the resumed record stays valid JSONL. No torch here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TypeAlias, get_args, get_origin, get_type_hints

from .errors import RuntimeFailure
from .mission_records import (
    MISSION_RECORD_TYPES,
    AgentRecordLine,
    FieldLink,
    MissionEvent,
    RolloutCancelled,
    RolloutOffered,
    RolloutSwitch,
    RolloutSwitched,
    TelemetryReport,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 3
"""The record schema this module writes (1: records that carry no version; 3 added mission
control's lines)."""


def _line_encoder() -> Callable[[Any], str]:
    """record -> its compact JSON, exactly as ``json.JSONEncoder(separators=(",", ":")).encode``
    writes it, through json's C encoder built once: ``JSONEncoder.encode`` builds it anew on every
    call, which cost more than the schema check the write path now makes. Without the C
    accelerator, the encoder's own ``encode``. There is no circular-reference check: a record is
    flat data this module's callers build (a cycle would be a bug, and raises RecursionError)."""
    from json import encoder as json_encoder

    compact = json.JSONEncoder(separators=(",", ":"))
    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:
        return compact.encode
    # The arguments JSONEncoder.iterencode passes, for the compact encoder above.
    c_encode = make(
        None,  # markers: no circular-reference check
        compact.default,
        json_encoder.encode_basestring_ascii,  # ensure_ascii
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
    return lambda record: "".join(c_encode(record, 0))


_ENCODE: Final = _line_encoder()
"""One compact encoder for every line, built once."""


class RecordError(RuntimeFailure, ValueError):
    """A record does not match the schema: a writer's bug, or a file that is not a run record."""


# ---------------------------------------------------------------------------------- the schema
@dataclass(frozen=True, slots=True)
class RunStart:
    """A coordinator process started serving (once per process; a resume appends another)."""

    TYPE: ClassVar[str] = "run_start"
    coordinator_instance: str
    """Random id of this coordinator process (changes on every start)."""
    team_id: str
    """The team's id (the training run the artifacts come from)."""
    mode: str
    """``simulation``, ``field`` (lockstep) or ``mission`` (agents on their own clocks)."""
    resumed_from: int
    """Index of the first episode this process runs (0 unless resumed)."""
    time: float
    """Unix time of the start, in seconds."""
    schema: int = SCHEMA_VERSION
    """Schema version of the lines that follow (absent, so 1, in records of version 1)."""


@dataclass(frozen=True, slots=True)
class Join:
    """The coordinator admitted an agent."""

    TYPE: ClassVar[str] = "join"
    agent_id: str
    session_id: str
    client_name: str
    """What the agent called itself (at most 200 characters)."""
    rejoin: bool
    """This agent joined before in this coordinator process."""
    peer: str = ""
    """The agent's address as the carrier saw it."""
    via: str = "grpc"
    """``grpc`` (Join over gRPC) or ``lane`` (on the step lane, without gRPC)."""


@dataclass(frozen=True, slots=True)
class Attach:
    """A joined session opened its step carrier."""

    TYPE: ClassVar[str] = "attach"
    agent_id: str
    session_id: str
    carrier: str
    """``stream`` (the gRPC Steps stream) or ``lane`` (the step lane)."""


@dataclass(frozen=True, slots=True)
class Leave:
    """A session ended."""

    TYPE: ClassVar[str] = "leave"
    agent_id: str
    session_id: str
    reason: str
    """``left``, ``disconnected``, ``lease expired``, ``superseded``, ``shutdown``..."""


@dataclass(frozen=True, slots=True)
class EpisodeStart:
    """An episode began."""

    TYPE: ClassVar[str] = "episode_start"
    episode_id: int
    """Counts episodes started by this coordinator process, from 1 (what messages carry)."""
    episode_index: int
    """The episode's index in the whole run, from 0 (stays across a resume)."""
    seed: int
    """The environment's reset seed (the run's seed + episode_index)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One team step: what every seat did and how the exchange went."""

    TYPE: ClassVar[str] = "step"
    episode_id: int
    episode_index: int
    step: int
    """Step within the episode, from 0."""
    team_step: int
    """Step within the whole run, from 0 (stays across a resume)."""
    actions: tuple[int, ...]
    """The action applied per agent, in team order; every one legal under the step's mask."""
    fallback: tuple[str, ...]
    """Agents whose action the legal-action rule chose (reply missing or invalid)."""
    late: Mapping[str, int]
    """Agent id -> replies to earlier steps discarded during this one."""
    exchange_us: int
    """Requests sent -> last reply or deadline, in microseconds."""
    t_ms: float
    """Milliseconds since the coordinator process started."""
    decision_us: Mapping[str, int]
    """Agent id -> the decision time it reported, for the replies that were applied."""
    invalid: tuple[str, ...] = ()
    """Agents whose reply was out of range or masked (also in ``fallback``)."""
    applied: bool = True
    """The actions reached the environment (False: the episode aborted or the env raised)."""
    reward: float | None = None
    """Simulation: the team reward of the step; None in field mode or when not applied."""
    reports: Mapping[str, Mapping[str, float]] | None = None
    """Field mode: agent id -> what it reported ({name: value}); None in simulation."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"reward", "reports"})


@dataclass(frozen=True, slots=True)
class EpisodeEnd:
    """An episode ended."""

    TYPE: ClassVar[str] = "episode_end"
    episode_id: int
    episode_index: int
    seed: int
    steps: int
    """Team steps the episode took."""
    team_return: float
    """The summed team reward (JSON name ``return``)."""
    reason: str
    """``terminated``, ``truncated``, ``limit``, ``aborted: ...``, ``stopped`` (cut by a
    shutdown: run again on resume) or ``env_error``."""
    absent: tuple[str, ...] = ()
    """Agents whose seat was empty at some step of the episode."""
    error: str | None = None
    """With ``env_error``: what the environment raised."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"error"})
    JSON_NAMES: ClassVar[Mapping[str, str]] = {"team_return": "return"}


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The coordinator's run ended (finished, or stopped for a resume later)."""

    TYPE: ClassVar[str] = "run_end"
    finished: bool
    """Every requested episode ran."""
    team_steps: int
    stats: Mapping[str, Mapping[str, int]]
    """Agent id -> the coordinator's counters (joins, decisions, fallbacks, late_replies...)."""
    never_joined: tuple[str, ...] = ()
    incomplete_team_episodes: int = 0
    """Episodes during which at least one seat was empty."""
    failure: str | None = None
    """Why the run could not go on, or None."""
    exit_status: int = 0
    """qmix-coordinator's exit code for this run."""


Record: TypeAlias = (
    RunStart
    | Join
    | Attach
    | Leave
    | EpisodeStart
    | Step
    | EpisodeEnd
    | RunEnd
    | MissionEvent
    | FieldLink
    | TelemetryReport
    | AgentRecordLine
    | RolloutOffered
    | RolloutSwitch
    | RolloutSwitched
    | RolloutCancelled
)
"""Any line of a run record."""

RECORD_TYPES: Final[tuple[type[Record], ...]] = (
    RunStart,
    Join,
    Attach,
    Leave,
    EpisodeStart,
    Step,
    EpisodeEnd,
    RunEnd,
    *MISSION_RECORD_TYPES,
)


class _Schema:
    """One record type's names and checks, derived once from its dataclass."""

    def __init__(self, cls: type[Record]) -> None:
        self.cls = cls
        json_names: Mapping[str, str] = getattr(cls, "JSON_NAMES", {})
        optional: frozenset[str] = getattr(cls, "OPTIONAL", frozenset())
        hints = get_type_hints(cls)
        fields = dataclasses.fields(cls)
        self.attr_of = {json_names.get(f.name, f.name): f.name for f in fields}
        self.json_of = {a: j for j, a in self.attr_of.items()}
        self.allowed = frozenset(self.attr_of)
        self.required = frozenset(  # what a current writer must give
            self.json_of[f.name] for f in fields if f.name not in optional
        ) - {"schema"}  # RecordWriter writes it
        self.required_v1 = frozenset(  # what every version has
            self.json_of[f.name] for f in fields if f.default is dataclasses.MISSING
        )
        # The write path's check, with the "type" key every line has: no key outside
        # allowed_line, and as many keys as required ones once the optional ones are set aside.
        self.allowed_line = self.allowed | {"type"}
        self.optional = tuple(sorted(self.allowed - self.required))
        self.n_required = len(self.required) + 1
        self.checks = {self.json_of[f.name]: _checker(hints[f.name]) for f in fields}


def _checker(hint: Any) -> Callable[[Any], Any]:
    """value -> the attribute's value (lists become tuples), or TypeError."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is not None and type(None) in args:  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        check = _checker(inner)
        return lambda v: None if v is None else check(v)
    if origin is tuple:
        item = _checker(args[0])

        def as_tuple(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list | tuple):
                raise TypeError(f"expected a list, found {type(v).__name__}")
            return tuple(item(x) for x in v)

        return as_tuple
    if origin is Mapping:

        def as_mapping(v: Any) -> Any:
            if not isinstance(v, dict):
                raise TypeError(f"expected an object, found {type(v).__name__}")
            return v

        return as_mapping
    if hint is float:
        return _scalar((int, float), "a number")
    if hint is int:
        return _scalar((int,), "an integer")
    if hint is bool:
        return _scalar((bool,), "true or false")
    if hint is str:
        return _scalar((str,), "a string")
    raise TypeError(f"no record check for {hint!r}")  # a schema bug, found at import


def _scalar(types: tuple[type, ...], what: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise TypeError(f"expected {what}, found {type(v).__name__} {v!r:.60}")
        return v

    return check


_SCHEMAS: Final[dict[str, _Schema]] = {c.TYPE: _Schema(c) for c in RECORD_TYPES}
_BY_CLASS: Final[dict[type, _Schema]] = {s.cls: s for s in _SCHEMAS.values()}


def _schema_of(record_type: Any) -> _Schema:
    schema = _SCHEMAS.get(record_type)
    if schema is None:
        raise RecordError(
            f"unknown record type {record_type!r}; the schema (version {SCHEMA_VERSION}) has "
            f"{sorted(_SCHEMAS)}"
        )
    return schema


def check_fields(record_type: str, names: Any) -> None:
    """Raise `RecordError` unless ``names`` (JSON names, with or without ``type``) are a valid
    ``record_type`` record of the current schema: no unknown field, every required one."""
    schema = _schema_of(record_type)
    given = set(names) - {"type"}
    if given <= schema.allowed and schema.required <= given:
        return
    unknown, missing = sorted(given - schema.allowed), sorted(schema.required - given)
    raise RecordError(
        f"a {record_type!r} record must have the fields {sorted(schema.required)} "
        f"(optional: {sorted(schema.allowed - schema.required)}); found unknown {unknown}, "
        f"missing {missing}. Fix the writer or the schema in qmix_edge.runtime.records."
    )


def to_json(record: Record) -> dict[str, Any]:
    """The JSON object of one typed record (``type`` first), as `RecordWriter` writes it."""
    schema = _BY_CLASS[type(record)]
    out: dict[str, Any] = {"type": record.TYPE}
    for attr, name in schema.json_of.items():
        value = getattr(record, attr)
        if value is None and name not in schema.required:
            continue  # an optional field left out, as the coordinator leaves it out
        out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def from_json(obj: Mapping[str, Any], schema_version: int = SCHEMA_VERSION) -> Record:
    """The typed record of one JSON object written under ``schema_version``.

    Raises `RecordError` naming the type, the field and what was expected: an unknown type or
    field, a missing required one, or a value of the wrong type."""
    record_type = obj.get("type")
    schema = _schema_of(record_type)
    given = set(obj) - {"type"}
    required = schema.required if schema_version >= 2 else schema.required_v1
    unknown, missing = sorted(given - schema.allowed), sorted(required - given)
    if unknown or missing:
        raise RecordError(
            f"a {record_type!r} record of schema {schema_version} has the fields "
            f"{sorted(schema.allowed)}, of which {sorted(required)} are required; found unknown "
            f"{unknown}, missing {missing}"
        )
    values = {}
    for name in given:
        try:
            values[schema.attr_of[name]] = schema.checks[name](obj[name])
        except TypeError as e:
            raise RecordError(f"{record_type} record, field {name!r}: {e}") from e
    if schema.cls is RunStart and "schema" not in given:
        values["schema"] = 1
    return schema.cls(**values)


# ---------------------------------------------------------------------------------- writing
class RecordWriter:
    """Appends records to a JSONL file, one line per unbuffered write (thread-safe for whole lines).

    The file is opened unbuffered in binary append mode: each record is encoded once and handed to
    the kernel in a single ``write(2)`` before `write` returns (what a text file's write + flush
    did, without the text layer's copies), so a crash of this process loses at most the record in
    flight. Every record is checked against the schema first (`check_fields`); a ``run_start``
    gets the ``schema`` version written in.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._file: io.FileIO | None = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, record_type: str, **fields: Any) -> None:
        """Append one record ``{"type": record_type, **fields}``."""
        self.write_record({"type": record_type, **fields})

    def append(self, record: Record) -> None:
        """Append one typed record."""
        self.write_record(to_json(record))

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Append one record given as a mapping that already holds its ``type`` (hot path)."""
        record_type: Any = record.get("type")
        schema = _SCHEMAS.get(record_type)
        if schema is None or not schema.allowed_line.issuperset(record):
            check_fields(record_type, record.keys())
            return  # not reached: check_fields raised
        n = len(record)
        for name in schema.optional:
            n -= name in record
        if n != schema.n_required:
            check_fields(record_type, record.keys())
            return  # not reached
        if schema.cls is RunStart:
            record = {**record, "schema": SCHEMA_VERSION}
        data = (_ENCODE(record) + "\n").encode("utf-8")
        with self._lock:
            f = self._file
            if f is None:
                raise ValueError(f"record file {self.path} is closed")
            written = f.write(data)  # a regular file takes it all at once
            while written is not None and written < len(data):  # a partial write: the rest
                data = data[written:]
                written = f.write(data)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None


def _cut_torn_tail(path: Path) -> None:
    """Truncate a last line that has no newline (a write cut by a crash), so appends stay valid."""
    try:
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back for the last complete line (records are short: read in 64 KiB blocks).
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "%s ended with a torn line (%d bytes, a crash while writing); cut off before appending",
        path,
        size - keep,
    )


# ---------------------------------------------------------------------------------- reading
def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Yield every complete record of a record file as its typed record.

    A torn last line (a crash while writing) and a line that is not JSON are skipped with a
    warning; a line that is JSON but not a record of its schema raises `RecordError` naming the
    file and the line, as does a schema newer than this module's."""
    version = 1
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                log.warning("%s: line %d is incomplete (a crash while writing); skipped", path, n)
                break
            try:
                obj = json.loads(line)
            except ValueError:
                log.warning("%s: line %d is not JSON; skipped", path, n)
                continue
            if not isinstance(obj, dict):
                raise RecordError(f"{path}: line {n} is not a JSON object: {line[:80]!r}")
            if obj.get("type") == RunStart.TYPE:
                version = obj.get("schema", 1)
                if not isinstance(version, int) or version > SCHEMA_VERSION:
                    raise RecordError(
                        f"{path}: line {n} starts a run record of schema {version!r}; this "
                        f"qmix-edge reads schemas 1 to {SCHEMA_VERSION}. Read it with the "
                        "qmix-edge version that wrote it, or a newer one."
                    )
            try:
                yield from_json(obj, version)
            except RecordError as e:
                raise RecordError(f"{path}: line {n}: {e}") from e


def resume_point(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(next episode index, team steps so far) of a record file; (0, 0) when it does not exist.

    An episode counts as done when its ``episode_end`` reason is anything but ``stopped`` (a
    stopped episode was cut by a shutdown and is run again, with the same seed, on resume).
    """
    p = Path(path)
    if not p.exists():
        return 0, 0
    next_index, team_steps = 0, 0
    for rec in read_records(p):
        if isinstance(rec, EpisodeEnd) and rec.reason != "stopped":
            next_index = max(next_index, rec.episode_index + 1)
        elif isinstance(rec, Step):
            team_steps = max(team_steps, rec.team_step + 1)
    return next_index, team_steps


__all__ = [
    "RECORD_TYPES",
    "SCHEMA_VERSION",
    "Attach",
    "EpisodeEnd",
    "EpisodeStart",
    "Join",
    "Leave",
    "Record",
    "RecordError",
    "RecordWriter",
    "RunEnd",
    "RunStart",
    "Step",
    "check_fields",
    "from_json",
    "read_records",
    "resume_point",
    "to_json",
]
