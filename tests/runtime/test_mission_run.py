"""A mission's schedule in `qmix-coordinator --mode mission` (in process): episodes announced at
agreed instants and lasting exactly their periods, a team that never linked named in the summary,
and a resumed mission numbering on, storing each agent line once, and accepting the version its
last rollout switched to."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_doubles import two_step_team

from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig
from qmix_edge.runtime.coordinator.config import EXIT_INCOMPLETE_TEAM
from qmix_edge.runtime.coordinator.mission_run import MissionSummary, mission_resume_point
from qmix_edge.runtime.mission_records import MissionEvent
from qmix_edge.runtime.records import RecordWriter, RunEnd, read_records

V2 = "b" * 64


def mission_config(tmp_path: Path, **kw: object) -> CoordinatorConfig:
    art = tmp_path / "art"
    art.mkdir(exist_ok=True)
    (art / "manifest.json").write_text("{}")  # its sha256 is the team's version
    base: dict[str, object] = {
        "artifacts": str(art),
        "mode": "mission",
        "episode_limit": 2,
        "step_period_ms": 50,
        "start_lead_ms": 20,
        "episodes": 2,
        "team_wait_s": 0.2,
        "port": 0,
    }
    return CoordinatorConfig(**{**base, **kw})  # type: ignore[arg-type]


def write_old_mission(path: Path) -> None:
    w = RecordWriter(path)
    w.write("run_start", coordinator_instance="x", team_id="t", mode="mission",
            resumed_from=0, time=0.0)  # fmt: skip
    for i in range(3):
        w.write("mission", kind="start", episode_id=i + 1, at=float(i), time=0.0, episode_index=i)
    for seq in range(4):
        w.write("agent_record", agent_id="agent_0", seq=seq, line="{}")
    w.write("rollout_switched", version=V2, episode_id=2)
    w.close()


def test_a_resume_point_numbers_on_stores_lines_once_and_keeps_the_switched_version(
    tmp_path: Path,
) -> None:
    record = tmp_path / "m.jsonl"
    assert mission_resume_point(record).next_index == 0
    write_old_mission(record)
    point = mission_resume_point(record)
    assert (point.next_index, dict(point.record_next_seq), point.version) == (3, {"agent_0": 4}, V2)


def test_a_mission_announces_each_episode_and_names_who_never_linked(tmp_path: Path) -> None:
    record = tmp_path / "m.jsonl"
    write_old_mission(record)
    c = Coordinator(
        two_step_team(), mission_config(tmp_path, episodes=5, resume=True), record_path=record
    )
    assert c.mission is not None and c.mission.version == V2  # the last rollout's version
    try:
        c.start("127.0.0.1:0")
        summary = c.run()
    finally:
        c.close()
    assert isinstance(summary, MissionSummary)
    assert (summary.finished, summary.episodes) == (True, 2)  # episodes 3 and 4 of 5
    assert summary.never_linked == ("agent_0", "agent_1")
    assert summary.exit_status == EXIT_INCOMPLETE_TEAM
    recs = list(read_records(record))
    events = [r for r in recs if isinstance(r, MissionEvent)][3:]  # this process's
    assert [(e.kind, e.episode_index) for e in events] == [
        ("start", 3), ("end", 3), ("start", 4), ("end", 4),
    ]  # fmt: skip
    for start, end in zip(events[::2], events[1::2], strict=True):
        assert end.at - start.at == pytest.approx(2 * 0.050)  # limit x period, agreed ahead
    assert [r.exit_status for r in recs if isinstance(r, RunEnd)] == [EXIT_INCOMPLETE_TEAM]


def test_lockstep_agents_are_told_this_is_mission_control(tmp_path: Path) -> None:
    import grpc

    from qmix_edge.runtime.proto.v1 import team_pb2 as pb
    from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc

    c = Coordinator(two_step_team(), mission_config(tmp_path), record_path=None)
    try:
        port = c.start("127.0.0.1:0")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as e:
            pb_grpc.TeamStub(ch).Join(
                pb.JoinRequest(agent_id="agent_0", artifact_sha256="0" * 64, protocol_version=1),
                timeout=10,
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--rate-hz" in e.value.details()
    finally:
        c.close()
