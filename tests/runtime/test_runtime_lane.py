"""The step lane: framing, addresses, certificate identities, and the same team behaviour on the
lane as on the gRPC Steps stream (records equal step for step), including a broken lane."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from runtime_doubles import FakePolicy, Harness

from qmix_edge.runtime import lane
from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig
from qmix_edge.runtime.errors import RuntimeFailure
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.records import read_records
from qmix_edge.runtime.security import peercert_agent_id


# ------------------------------------------------------------------------------- framing
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(-(2**63), 2**63 - 1)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_frames_survive_any_chunking(fields: list[tuple[int, int]], cuts: list[int]) -> None:
    msgs = [
        pb.AgentMessage(step_reply=pb.StepReply(episode_id=7, step=s, action=a)) for s, a in fields
    ]
    stream = b"".join(lane.encode_frame(m) for m in msgs)
    dec = lane.FrameDecoder(max_bytes=1024)
    bodies: list[bytes] = []
    pos = 0
    for n in cuts * (len(stream) // sum(cuts) + 1):
        bodies += dec.feed(stream[pos : pos + n])
        pos += n
        if pos >= len(stream):
            break
    assert [pb.AgentMessage.FromString(b) for b in bodies] == msgs
    assert dec.pending == 0


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    dec = lane.FrameDecoder(max_bytes=100)
    assert dec.feed(lane.FRAME_HEADER.pack(100) + b"x" * 99) == []  # at the limit: waits
    with pytest.raises(lane.FrameError, match="101 bytes exceeds the limit of 100"):
        lane.FrameDecoder(max_bytes=100).feed(lane.FRAME_HEADER.pack(101))


@pytest.mark.parametrize(
    ("address", "expected"),
    [("10.0.0.2:7001", ("10.0.0.2", 7001)), ("[::1]:9", ("::1", 9)), ("ground:1", ("ground", 1))],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert lane.parse_address(address) == expected


@pytest.mark.parametrize("bad", ["ground", ":7001", "host:0", "host:70000", "host:x"])
def test_parse_address_refuses_what_is_not_host_port(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a step lane address HOST:PORT"):
        lane.parse_address(bad)


@pytest.mark.parametrize(
    ("cert", "agent_id"),
    [
        (
            {
                "subject": ((("commonName", "device-17"),),),
                "subjectAltName": (("DNS", "x.invalid"), ("URI", "qmix-agent:agent_1")),
            },
            "agent_1",
        ),
        ({"subject": ((("organizationName", "lab"),), (("commonName", "agent_0"),))}, "agent_0"),
        ({"subject": ((("organizationName", "lab"),),)}, None),
        (None, None),
    ],
)
def test_peercert_agent_id_prefers_the_san_uri(cert: Any, agent_id: str | None) -> None:
    assert peercert_agent_id(cert) == agent_id


# ------------------------------------------------------------------------ the team on it
def run_team(h: Harness, lanes: dict[str, bool]) -> list[AgentRunner]:
    h.run_in_thread()
    runners = [
        AgentRunner(FakePolicy(a), h.target, watchdog_s=10.0, step_lane=on)
        for a, on in lanes.items()
    ]
    for r in runners:
        threading.Thread(target=r.run, daemon=True).start()
    return runners


def carriers(h: Harness) -> dict[str, str]:
    recs = read_records(h.coordinator._record_path)  # type: ignore[arg-type]
    return {r["agent_id"]: r["carrier"] for r in recs if r["type"] == "attach"}


def step_facts(h: Harness) -> list[tuple[Any, ...]]:
    recs = read_records(h.coordinator._record_path)  # type: ignore[arg-type]
    return [
        (r["episode_index"], r["step"], tuple(r["actions"]), r["reward"], tuple(r["fallback"]))
        for r in recs
        if r["type"] == "step"
    ]


def test_lane_stream_and_mixed_teams_step_identically(make_harness: Any) -> None:
    facts = {}
    for name, lanes in {
        "lane": {"agent_0": True, "agent_1": True},
        "stream": {"agent_0": False, "agent_1": False},
        "mixed": {"agent_0": True, "agent_1": False},
    }.items():
        h = make_harness(episodes=4, step_deadline_ms=5000, seed=3)
        run_team(h, lanes)
        summary = h.wait()
        assert summary.finished
        assert carriers(h) == {a: "lane" if on else "stream" for a, on in lanes.items()}
        facts[name] = step_facts(h)
    assert len(facts["lane"]) == 8 and all(f[4] == () for f in facts["lane"])
    assert facts["lane"] == facts["stream"] == facts["mixed"]


def test_no_lane_on_the_coordinator_means_the_steps_stream(make_harness: Any) -> None:
    h = make_harness(episodes=1, step_lane=False)
    assert h.coordinator.lane_port == 0
    join = pb_grpc.TeamStub(h.channel()).Join(  # type: ignore[no-untyped-call]
        pb.JoinRequest(
            protocol_version=pb.PROTOCOL_VERSION_1,
            agent_id="agent_0",
            artifact_sha256=FakePolicy("agent_0").artifact_sha256,
            step_lane=True,
        ),
        timeout=5,
    )
    assert join.step_lane_port == 0
    h.coordinator.close(grace_s=0.1)


def test_a_broken_lane_is_a_disconnect_and_the_agent_rejoins_on_a_new_lane(
    make_harness: Any,
) -> None:
    h = make_harness(episodes=40, step_deadline_ms=2000, step_period_ms=5, team_wait_s=10)
    runners = run_team(h, {"agent_0": True, "agent_1": True})
    victim = runners[1]
    deadline = time.monotonic() + 20
    while victim.stats.steps < 5 or victim._lane is None:
        assert time.monotonic() < deadline, "agent_1 never stepped on the lane"
        time.sleep(0.005)
    victim._lane.interrupt()  # the link breaks under the agent (as a cut cable would)
    summary = h.wait(60)
    assert summary.finished
    c = summary.counters["agent_1"]
    assert c.joins == 2 and c.rejoins == 1 and c.disconnects == 1
    assert victim.stats.sessions == 2
    recs = read_records(h.coordinator._record_path)  # type: ignore[arg-type]
    assert [r["carrier"] for r in recs if r["type"] == "attach" and r["agent_id"] == "agent_1"] == [
        "lane",
        "lane",
    ]


def test_a_lane_port_in_use_fails_loudly() -> None:
    from runtime_doubles import two_step_team

    from qmix_edge.envs import TwoStepGame

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        c = Coordinator(two_step_team(), CoordinatorConfig(step_lane_port=taken), env=TwoStepGame())
        try:
            with pytest.raises(RuntimeFailure, match=r"cannot bind the step lane .* in use"):
                c.start("127.0.0.1:0")
        finally:
            c.close(grace_s=0.1)


def test_lane_port_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"step_lane_port must be in \[0, 65535\]"):
        CoordinatorConfig(step_lane_port=70000)
