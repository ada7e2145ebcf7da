"""The step lane: framing, addresses, certificate identities, and the same team behaviour on the
lane as on the gRPC Steps stream (records equal step for step), including a broken lane; and
agents that join and leave on the lane itself, without gRPC."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_doubles import CountingAnswerer, FakePolicy, Harness

from qmix_edge.runtime import lane, wire
from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig
from qmix_edge.runtime.errors import RuntimeFailure
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.records import Attach, Join, Leave, Step, read_records
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


def _lane_client_fed(
    chunks: list[bytes], max_bytes: int = 1024, pause_s: float = 0.0
) -> lane.LaneClient:
    """A LaneClient whose coordinator end (a thread) sends ``chunks``, each one send with
    ``pause_s`` between them, then closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    client = lane.LaneClient("127.0.0.1", srv.getsockname()[1], max_message_bytes=max_bytes)
    conn, _ = srv.accept()
    srv.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def feed() -> None:
        with conn:
            for c in chunks:
                conn.sendall(c)
                time.sleep(pause_s)  # the reader sees partial frames

    threading.Thread(target=feed, daemon=True).start()
    return client


def _steps(*steps: int) -> list[pb.CoordinatorMessage]:
    return [pb.CoordinatorMessage(step_request=pb.StepRequest(step=s)) for s in steps]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_lane_client_reads_frames_however_they_arrive(cuts: list[int]) -> None:
    msgs = [*_steps(*range(1, 8)), pb.CoordinatorMessage(goodbye=pb.Goodbye(detail="x" * 300))]
    stream = b"".join(lane.encode_frame(m) for m in msgs)
    chunks, pos = [], 0
    for n in cuts * (len(stream) // sum(cuts) + 1):
        chunks.append(stream[pos : pos + n])
        pos += n
        if pos >= len(stream):
            break
    client = _lane_client_fed(chunks, pause_s=0.001)
    try:
        got = []
        while (m := client.recv()) is not None:
            got.append(m)
        assert got == msgs
    finally:
        client.close()


def test_lane_client_keeps_frames_that_arrive_together_and_refills_past_its_buffer() -> None:
    # Largest frames back to back, more than the receive buffer holds at once.
    big = pb.CoordinatorMessage(goodbye=pb.Goodbye(detail="y" * 1000))
    msgs = [big, *_steps(1, 2, 3), *[big] * 12, *_steps(4), big]
    client = _lane_client_fed([b"".join(lane.encode_frame(m) for m in msgs)], max_bytes=1010)
    try:
        assert [client.recv() for _ in msgs] == msgs
        assert client.recv() is None
    finally:
        client.close()


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (lane.FRAME_HEADER.pack(1025), "sent a 1025-byte frame; the limit is 1024 bytes"),
        (lane.FRAME_HEADER.pack(10) + b"abc", "closed inside a 10-byte frame"),
        (b"\x05\x00", "closed inside a frame header"),
        (lane.FRAME_HEADER.pack(2) + b"\xff\xff", "not a message"),
    ],
)
def test_lane_client_refuses_bad_frames(stream: bytes, match: str) -> None:
    client = _lane_client_fed([lane.encode_frame(_steps(1)[0]) + stream])
    try:
        assert client.recv() == _steps(1)[0]
        with pytest.raises(lane.WireError, match=match):
            client.recv()
    finally:
        client.close()


def test_lane_client_interrupt_unblocks_recv() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = lane.LaneClient("127.0.0.1", srv.getsockname()[1], max_message_bytes=1024)
        conn, _ = srv.accept()
        with conn:
            got: list[Any] = []
            first = threading.Event()

            def read() -> None:
                got.append(client.recv())
                first.set()
                got.append(client.recv())  # nothing more comes: blocks until interrupted

            t = threading.Thread(target=read)
            t.start()
            conn.sendall(lane.encode_frame(_steps(1)[0]))
            assert first.wait(5)
            client.interrupt()
            t.join(5)
            assert not t.is_alive() and got == [_steps(1)[0], None]
            client.close()


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
def runner(h: Harness, agent_id: str, how: str, **kw: Any) -> AgentRunner:
    """An agent stepping on the "lane" (joined over gRPC), the "stream", or joined on the lane
    alone ("lane-only", no gRPC)."""
    kw.setdefault("answerer", CountingAnswerer)
    if how == "lane-only":
        lane_at = f"127.0.0.1:{h.coordinator.lane_port}"
        return AgentRunner(FakePolicy(agent_id), None, step_lane_address=lane_at, **kw)
    return AgentRunner(FakePolicy(agent_id), h.target, step_lane=how == "lane", **kw)


def run_team(h: Harness, how: dict[str, str]) -> list[AgentRunner]:
    h.run_in_thread()
    runners = [runner(h, a, way, watchdog_s=10.0) for a, way in how.items()]
    for r in runners:
        threading.Thread(target=r.run, daemon=True).start()
    return runners


def carriers(h: Harness) -> dict[str, str]:
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    return {r.agent_id: r.carrier for r in recs if isinstance(r, Attach)}


def step_facts(h: Harness) -> list[tuple[Any, ...]]:
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    return [
        (r.episode_index, r.step, r.actions, r.reward, r.fallback)
        for r in recs
        if isinstance(r, Step)
    ]


def joined_on_lane(h: Harness) -> dict[str, bool]:
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    return {r.agent_id: r.via == "lane" for r in recs if isinstance(r, Join)}


def test_lane_stream_and_mixed_teams_step_identically(make_harness: Any) -> None:
    facts = {}
    for name, how in {
        "lane": {"agent_0": "lane", "agent_1": "lane"},
        "stream": {"agent_0": "stream", "agent_1": "stream"},
        "mixed": {"agent_0": "lane", "agent_1": "stream"},
        "lane-only": {"agent_0": "lane-only", "agent_1": "lane-only"},
        "all three": {"agent_0": "lane-only", "agent_1": "stream"},
    }.items():
        h = make_harness(episodes=4, step_deadline_ms=5000, seed=3)
        run_team(h, how)
        summary = h.wait()
        assert summary.finished
        assert carriers(h) == {a: "stream" if w == "stream" else "lane" for a, w in how.items()}
        assert joined_on_lane(h) == {a: w == "lane-only" for a, w in how.items()}
        facts[name] = step_facts(h)
    assert len(facts["lane"]) == 8 and all(f[4] == () for f in facts["lane"])
    assert all(f == facts["lane"] for f in facts.values())


def test_no_lane_on_the_coordinator_means_the_steps_stream(make_harness: Any) -> None:
    h = make_harness(episodes=1, step_lane=False)
    assert h.coordinator.lane_port == 0
    join = pb_grpc.TeamStub(h.channel()).Join(  # type: ignore[no-untyped-call]
        pb.JoinRequest(
            protocol_version=wire.PROTOCOL_VERSION,
            agent_id="agent_0",
            artifact_sha256=FakePolicy("agent_0").artifact_sha256,
            step_lane=True,
        ),
        timeout=5,
    )
    assert join.step_lane_port == 0
    h.coordinator.close(grace_s=0.1)


@pytest.mark.parametrize("how", ["lane", "lane-only"])
def test_a_broken_lane_is_a_disconnect_and_the_agent_rejoins_on_a_new_lane(
    make_harness: Any, how: str
) -> None:
    h = make_harness(episodes=40, step_deadline_ms=2000, step_period_ms=5, team_wait_s=10)
    runners = run_team(h, {"agent_0": "lane", "agent_1": how})
    victim = runners[1]
    wait_for_decisions(h, "agent_1", 5)
    assert victim.lane is not None, "agent_1 never stepped on the lane"
    victim.lane.interrupt()  # the link breaks under the agent (as a cut cable would)
    summary = h.wait(60)
    assert summary.finished
    c = summary.counters["agent_1"]
    assert c.joins == 2 and c.rejoins == 1 and c.disconnects == 1
    assert victim.stats.sessions == 2
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    assert [r.carrier for r in recs if isinstance(r, Attach) and r.agent_id == "agent_1"] == [
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


# ------------------------------------------------------------- joining on the lane alone
def wait_for_decisions(h: Harness, agent_id: str, n: int, timeout: float = 20.0) -> None:
    """Until the coordinator has applied ``n`` replies of ``agent_id`` as sent."""
    served = h.coordinator.wait_until(lambda c: c.counters[agent_id].decisions >= n, timeout)
    assert served, f"{agent_id} answered no {n} steps"


def wait_for_empty_seats(h: Harness, *agent_ids: str, timeout: float = 10.0) -> None:
    """Until no session holds the seats of ``agent_ids`` (every seat without any)."""

    def free(c: Coordinator) -> bool:
        live = c.live_agents()
        return not live if not agent_ids else not set(agent_ids) & set(live)

    assert h.coordinator.wait_until(free, timeout), (
        f"seats still taken: {h.coordinator.live_agents()}"
    )


def test_a_lane_only_agent_that_stops_leaves_and_its_seat_is_free(make_harness: Any) -> None:
    h = make_harness(episodes=0, step_period_ms=5, step_deadline_ms=2000, team_wait_s=10)
    runners = run_team(h, {"agent_0": "lane-only", "agent_1": "lane-only"})
    wait_for_decisions(h, "agent_0", 3)
    runners[0].stop()
    wait_for_empty_seats(h, "agent_0")
    h.coordinator.request_stop()
    h.wait()
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    leaves = [r.reason for r in recs if isinstance(r, Leave) and r.agent_id == "agent_0"]
    assert leaves[0] == "left: agent stopping"  # said, not cut
    assert h.summary.counters["agent_0"].disconnects == 0


@pytest.mark.parametrize(
    ("policy", "code"),
    [
        (FakePolicy("agent_9", artifact_sha256="cd" * 32), 2),  # NOT_FOUND: not in the team
        (
            FakePolicy("agent_0", artifact_sha256="ab" * 32),
            2,
        ),  # FAILED_PRECONDITION: another export
        (FakePolicy("agent_0", obs_dim=7), 2),  # the coordinator's sizes differ from the artifact's
    ],
)
def test_a_lane_only_agent_the_team_refuses_exits_2(
    make_harness: Any, policy: FakePolicy, code: int
) -> None:
    h = make_harness(episodes=1)
    r = AgentRunner(policy, None, step_lane_address=f"127.0.0.1:{h.coordinator.lane_port}")
    assert r.run() == code
    wait_for_empty_seats(h)  # nothing left holding a seat (the lane's close frees it)
    h.coordinator.close(grace_s=0.1)


def test_a_second_live_lane_only_agent_is_refused_and_retries(make_harness: Any) -> None:
    h = make_harness(episodes=0, step_period_ms=5, step_deadline_ms=2000, team_wait_s=10)
    run_team(h, {"agent_0": "lane-only", "agent_1": "lane"})
    wait_for_decisions(h, "agent_0", 2)
    twin = runner(h, "agent_0", "lane-only", give_up_s=0.5)
    assert twin.run() == 1  # ALREADY_EXISTS is retried, then it gives up; never admitted
    assert twin.stats.sessions == 0
    before = h.coordinator.counters["agent_0"].decisions
    wait_for_decisions(h, "agent_0", before + 2)  # the rightful agent_0 still steps
    h.coordinator.request_stop()
    h.wait()


def raw_lane(h: Harness) -> socket.socket:
    return socket.create_connection(("127.0.0.1", h.coordinator.lane_port), timeout=10)


def read_frames(sock: socket.socket, until: Any) -> list[pb.CoordinatorMessage]:
    """Frames from a raw lane until ``until(message)`` holds or the lane closes."""
    dec, got = lane.FrameDecoder(1 << 16), []
    while data := sock.recv(65536):
        for body in dec.feed(data):
            got.append(pb.CoordinatorMessage.FromString(body))
            if until(got[-1]):
                return got
    return got


def lane_join_frame(agent_id: str = "agent_0") -> bytes:
    req = pb.JoinRequest(
        protocol_version=wire.PROTOCOL_VERSION,
        agent_id=agent_id,
        artifact_sha256=FakePolicy(agent_id).artifact_sha256,
    )
    return lane.encode_frame(pb.AgentMessage(join=req))


def test_frames_sent_with_the_join_wait_for_its_answer(make_harness: Any) -> None:
    """A join, a second join and a leave in one write: the reply comes first, the second join is
    ignored, and the leave (which follows the join in the byte stream) ends the session."""
    h = make_harness(episodes=0, step_period_ms=5, team_wait_s=10)
    h.run_in_thread()
    leave = lane.encode_frame(pb.AgentMessage(leave=pb.LeaveRequest(reason="pipelined")))
    with raw_lane(h) as sock:
        sock.sendall(lane_join_frame() + lane_join_frame() + leave)
        got = read_frames(sock, until=lambda m: False)  # until the coordinator closes the lane
    assert got[0].WhichOneof("kind") == "join_reply"
    assert got[0].join_reply.step_lane_port == h.coordinator.lane_port
    h.coordinator.request_stop()
    h.wait()
    recs = read_records(h.coordinator.record_path)  # type: ignore[arg-type]
    assert [(r.TYPE, getattr(r, "reason", None)) for r in recs if isinstance(r, Join | Leave)] == [
        ("join", None),
        ("leave", "left: pipelined"),
    ]


def test_a_lane_that_closes_while_its_join_is_decided_frees_the_seat(make_harness: Any) -> None:
    h = make_harness(episodes=0, step_period_ms=5, team_wait_s=10)
    h.run_in_thread()
    for _ in range(3):  # each time the seat is free again for the next one
        with raw_lane(h) as sock:
            sock.sendall(lane_join_frame())
        wait_for_empty_seats(h)
    h.coordinator.request_stop()
    h.wait()


def test_join_on_a_stopping_coordinator_is_unavailable_and_retried(make_harness: Any) -> None:
    h = make_harness(episodes=1)
    h.coordinator.request_stop()  # new Joins are refused from now on
    with raw_lane(h) as sock:
        sock.sendall(lane_join_frame())
        (bye,) = read_frames(sock, until=lambda m: True)
    assert bye.goodbye.reason == pb.GOODBYE_REASON_REFUSED
    assert bye.goodbye.status_code == 14  # UNAVAILABLE: not fatal for an agent
    h.coordinator.close(grace_s=0.1)


def test_a_plain_text_lane_agent_loads_neither_ssl_nor_grpc() -> None:
    """TLS is loaded only when configured: a plain-text lane-only agent keeps ssl (and libssl) out
    of its process, as it keeps gRPC out (checked in a fresh interpreter)."""
    code = (
        "import socket, sys\n"
        "import qmix_edge.runtime.agent, qmix_edge.runtime.policy\n"
        "from qmix_edge.runtime.lane import LaneClient\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "LaneClient('127.0.0.1', server.getsockname()[1], max_message_bytes=1024).close()\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'ssl', '_ssl', 'grpc'})\n"
        "sys.exit(f'loaded {loaded}' if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_status_names_are_grpcs() -> None:
    import grpc

    from qmix_edge.runtime.errors import STATUS_NAMES

    assert {c.value[0]: c.name for c in grpc.StatusCode} == STATUS_NAMES


def test_agent_runner_needs_an_address() -> None:
    with pytest.raises(ValueError, match="found neither"):
        AgentRunner(FakePolicy("agent_0"), None)
    with pytest.raises(ValueError, match="the step lane is turned off"):
        AgentRunner(FakePolicy("agent_0"), None, step_lane=False, step_lane_address="h:1")


def test_a_lane_join_that_is_never_answered_times_out_and_is_retried() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []

        def accept() -> None:  # a hung coordinator: takes connections, never answers
            while True:
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    return

        threading.Thread(target=accept, daemon=True).start()
        r = AgentRunner(
            FakePolicy("agent_0"),
            None,
            step_lane_address=f"127.0.0.1:{server.getsockname()[1]}",
            join_timeout_s=0.2,
            give_up_s=1.0,
        )
        assert r.run() == 1  # gave up after give_up_s, never joined
        assert r.stats.sessions == 0 and len(accepted) >= 2  # dialled again after each timeout
        for c in accepted:
            c.close()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], 50052), (["--port", "7000"], 7001), (["--port", "0"], 0), (["--step-lane-port", "9"], 9)],
)
def test_the_lane_port_defaults_to_the_grpc_port_plus_one(argv: list[str], expected: int) -> None:
    from qmix_edge.runtime.coordinator import build_parser, step_lane_port

    args = build_parser().parse_args(["--artifacts", "a", *argv])
    assert step_lane_port(args.port, args.step_lane_port) == expected
