"""The run record's schema: typed records written and read through one module.

- every record type goes through `RecordWriter` and comes back from `read_records` equal, as its
  own dataclass; a run_start carries the schema version;
- a writer's bug (an unknown type, an unknown field, a missing one) raises before anything is
  written; a value of the wrong type is refused when read;
- a record written before records had a version still reads (its later fields at their defaults)
  and resumes; a newer schema is refused, naming the versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qmix_edge.runtime.records import (
    SCHEMA_VERSION,
    Attach,
    EpisodeEnd,
    EpisodeStart,
    Join,
    Leave,
    Record,
    RecordError,
    RecordWriter,
    RunEnd,
    RunStart,
    Step,
    read_records,
    resume_point,
    to_json,
)

ONE_OF_EACH: list[Record] = [
    RunStart("c1", "team", "simulation", resumed_from=0, time=1.5),
    Join("agent_0", "s1", 'drône-0 "α"', rejoin=False, peer="ipv4:127.0.0.1:1", via="lane"),
    Attach("agent_0", "s1", carrier="lane"),
    EpisodeStart(episode_id=1, episode_index=0, seed=7),
    Step(
        episode_id=1,
        episode_index=0,
        step=0,
        team_step=0,
        actions=(2, 1),
        fallback=("agent_1",),
        late={"agent_1": 1},
        exchange_us=812,
        t_ms=3.25,
        decision_us={"agent_0": 90},
        invalid=("agent_1",),
        reward=-0.5,
    ),
    Step(1, 0, 1, 1, (0, 0), (), {}, 400, 4.0, {}, reports={"agent_0": {"distance": 1.0}}),
    EpisodeEnd(1, 0, 7, steps=2, team_return=-0.5, reason="env_error", error="boom"),
    Leave("agent_0", "s1", reason="left"),
    RunEnd(
        finished=True,
        team_steps=2,
        stats={"agent_0": {"joins": 1}},
        never_joined=("agent_1",),
        incomplete_team_episodes=1,
        failure=None,
        exit_status=3,
    ),
]


def test_every_record_type_reads_back_as_itself(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    w = RecordWriter(path)
    for r in ONE_OF_EACH:
        w.append(r)
    w.close()
    assert list(read_records(path)) == ONE_OF_EACH
    first = json.loads(path.read_text().splitlines()[0])
    assert first["type"] == "run_start" and first["schema"] == SCHEMA_VERSION
    end = json.loads(path.read_text().splitlines()[6])
    assert end["return"] == -0.5 and "team_return" not in end  # the JSON name is unchanged


def test_each_line_is_the_compact_json_the_format_always_had(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    w = RecordWriter(path)
    for r in ONE_OF_EACH:
        w.append(r)
    w.close()
    expected = []
    for r in ONE_OF_EACH:
        obj = to_json(r)
        if isinstance(r, RunStart):
            obj["schema"] = SCHEMA_VERSION
        expected.append(json.dumps(obj, separators=(",", ":")) + "\n")
    assert path.read_bytes() == "".join(expected).encode("ascii")  # non-ASCII escaped, as before


def test_the_coordinators_call_shape_is_checked_and_typed(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    w = RecordWriter(path)
    w.write("episode_start", episode_id=1, episode_index=0, seed=3)
    w.write_record({"type": "leave", "agent_id": "a", "session_id": "s", "reason": "left"})
    w.close()
    assert list(read_records(path)) == [EpisodeStart(1, 0, 3), Leave("a", "s", "left")]


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"type": "steps", "step": 0}, r"unknown record type 'steps'; the schema \(version 3\)"),
        (
            {"type": "leave", "agent_id": "a", "session_id": "s", "reason": "x", "why": 1},
            r"a 'leave' record must have .* found unknown \['why'\], missing \[\]",
        ),
        (
            {"type": "episode_start", "episode_id": 1, "seed": 0},
            r"found unknown \[\], missing \['episode_index'\]",
        ),
        ({"step": 0}, r"unknown record type None"),
    ],
)
def test_a_writers_bug_raises_and_writes_nothing(
    tmp_path: Path, record: dict[str, Any], match: str
) -> None:
    path = tmp_path / "run.jsonl"
    w = RecordWriter(path)
    with pytest.raises(RecordError, match=match):
        w.write_record(record)
    w.close()
    assert path.read_text() == ""


def test_a_value_of_the_wrong_type_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(
        '{"type":"episode_start","episode_id":1,"episode_index":"0","seed":0}\n', "utf-8"
    )
    with pytest.raises(RecordError, match=r"line 1: episode_start record, field 'episode_index'"):
        list(read_records(path))


# A record of the first format: no version, none of the fields added since.
VERSION_1 = [
    {
        "type": "run_start",
        "coordinator_instance": "old",
        "team_id": "t",
        "mode": "simulation",
        "resumed_from": 0,
        "time": 1.0,
    },
    {"type": "join", "agent_id": "agent_0", "session_id": "s", "client_name": "", "rejoin": False},
    {"type": "episode_start", "episode_id": 1, "episode_index": 0, "seed": 0},
    {
        "type": "step",
        "episode_id": 1,
        "episode_index": 0,
        "step": 0,
        "team_step": 0,
        "actions": [1],
        "fallback": [],
        "late": {},
        "exchange_us": 5,
        "t_ms": 0.5,
        "decision_us": {"agent_0": 3},
        "reward": 1.0,
        "applied": True,
    },
    {
        "type": "episode_end",
        "episode_id": 1,
        "episode_index": 0,
        "seed": 0,
        "steps": 1,
        "return": 1.0,
        "reason": "truncated",
    },
    {"type": "run_end", "finished": False, "team_steps": 1, "stats": {}},
]


def test_a_record_without_a_version_reads_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in VERSION_1))
    recs = list(read_records(path))
    start, join, _, step, end, run_end = recs
    assert isinstance(start, RunStart) and start.schema == 1
    assert isinstance(join, Join) and join.via == "grpc" and join.peer == ""
    assert isinstance(step, Step) and step.invalid == () and step.actions == (1,)
    assert isinstance(end, EpisodeEnd) and end.absent == () and end.team_return == 1.0
    assert isinstance(run_end, RunEnd) and run_end.never_joined == () and run_end.exit_status == 0
    assert resume_point(path) == (1, 1)
    # A resumed coordinator appends a run of the current schema to the old file.
    w = RecordWriter(path)
    w.append(RunStart("new", "t", "simulation", resumed_from=1, time=2.0))
    w.write("episode_start", episode_id=1, episode_index=1, seed=1)
    w.close()
    recs = list(read_records(path))
    assert [type(r) for r in recs[-2:]] == [RunStart, EpisodeStart]
    assert [r.schema for r in recs if isinstance(r, RunStart)] == [1, SCHEMA_VERSION]


def test_a_current_record_must_have_every_current_field(tmp_path: Path) -> None:
    """What version 1 may leave out, a versioned record may not: `invalid` is required now."""
    path = tmp_path / "run.jsonl"
    lines = [{**VERSION_1[0], "schema": SCHEMA_VERSION}, VERSION_1[3]]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(RecordError, match=r"line 2: .*missing \['invalid'\]"):
        list(read_records(path))


def test_a_newer_schema_is_refused_with_the_versions(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({**VERSION_1[0], "schema": SCHEMA_VERSION + 1}) + "\n")
    with pytest.raises(RecordError, match=rf"schema {SCHEMA_VERSION + 1}; this qmix-edge reads"):
        list(read_records(path))
