"""Mission control and the agents' links over real gRPC on loopback: the agreed schedule, telemetry,
record upload without loss or doubles across a reconnection, and signed rollout (all switch at one
named episode, or none)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from qmix_edge.runtime.agent.autonomous import Mission, Phase
from qmix_edge.runtime.agent.mission_link import LocalRecord, MissionLink
from qmix_edge.runtime.agent.store import ArtifactStore
from qmix_edge.runtime.coordinator.mission import MissionControl
from qmix_edge.runtime.coordinator.mission_service import MissionServicer
from qmix_edge.runtime.policy import AgentPolicy
from qmix_edge.runtime.proto.v1 import mission_pb2_grpc as mpb_grpc
from qmix_edge.runtime.rollout import offer_for

AGENTS = ("agent_0", "agent_1")


@pytest.fixture(scope="module")
def sets(rollout_sets: dict[str, Path]) -> dict[str, Path]:
    return rollout_sets


class Server:
    """A gRPC server hosting one MissionServicer on an event loop thread."""

    def __init__(self, control: MissionControl, operator_token: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> tuple[Any, int]:
            server = grpc.aio.server()
            servicer = MissionServicer(control, operator_token=operator_token)
            mpb_grpc.add_MissionServicer_to_server(servicer, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        self.server, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Agent:
    """One field agent's mission side: its schedule, store, record and link."""

    def __init__(self, agent_id: str, port: int, folder: Path, version: str, **kw: Any) -> None:
        self.mission = Mission()
        self.started = threading.Event()
        self.switches: list[tuple[str, int]] = []
        self.switched = threading.Event()
        original = self.mission.start

        def start(ep: int, at: float) -> None:
            original(ep, at)
            self.starts.append((ep, at))
            self.started.set()

        self.starts: list[tuple[int, float]] = []
        self.mission.start = start  # type: ignore[method-assign]
        self.version = version
        self.record = LocalRecord(folder / "record.jsonl")

        def on_switch(v: str, ep: int) -> None:
            self.switches.append((v, ep))
            self.version = v  # this double switches at once (a real loop: at episode `ep`)
            self.switched.set()

        self.link = MissionLink(
            f"127.0.0.1:{port}",
            agent_id,
            self.mission,
            version=lambda: self.version,
            telemetry=lambda: {"version": self.version, "ticks": 7, "decisions": 5},
            on_switch=on_switch,
            record=self.record,
            telemetry_period_s=0.05,
            **kw,
        )
        self.link.start()

    def close(self) -> None:
        self.link.stop()
        self.record.close()


@pytest.fixture
def team(sets: dict[str, Path], tmp_path: Path) -> Iterator[Any]:
    made: list[Any] = []

    def make(**kw: Any) -> tuple[MissionControl, Server, list[str]]:
        records: list[tuple[str, dict[str, Any]]] = []
        control = MissionControl(
            "team",
            AGENTS,
            offer_for(sets["v1"]).version,
            record=lambda t, **f: records.append((t, f)),
        )
        server = Server(control, **kw)
        made.append(server)
        return control, server, records  # type: ignore[return-value]

    yield make
    for m in made:
        m.close()


def test_the_team_gets_one_start_time_and_mission_control_gets_telemetry(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, _ = team()
    v1 = offer_for(sets["v1"]).version
    agents = [Agent(a, server.port, tmp_path / a, v1) for a in AGENTS]
    try:
        assert control.wait_for(lambda c: all(s.linked for s in c.status().values()), 10)
        ep, at = control.start_episode(lead_s=0.3)
        for a in agents:
            assert a.started.wait(10)
        local = [a.starts[0][1] for a in agents]
        # one machine, one monotonic clock: the agreed instant is the same within the probes' error
        assert max(local) - min(local) < 0.005 and all(abs(t - at) < 0.005 for t in local)
        for a in agents:
            assert a.mission.state(at + 0.001) == (Phase.RUNNING, ep)
            assert (
                a.mission.state(at - 0.05)[0] is Phase.IDLE or a.mission.state(at - 0.05)[1] == ep
            )
        assert control.wait_for(
            lambda c: all(s.telemetry.get("decisions") == 5 for s in c.status().values()), 10
        )
    finally:
        for a in agents:
            a.close()


def test_record_lines_are_stored_once_across_a_reconnection(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, records = team()
    v1 = offer_for(sets["v1"]).version
    a = Agent("agent_0", server.port, tmp_path / "a0", v1)
    for i in range(10):
        a.record.append({"type": "tick", "i": i})
    assert control.wait_for(lambda c: c.status()["agent_0"].record_next_seq == 10, 10)
    a.close()  # the link goes away (a reboot); more happens offline
    assert control.wait_for(lambda c: not c.status()["agent_0"].linked, 10)
    b = Agent("agent_0", server.port, tmp_path / "a0", v1)  # the same record file, reopened
    for i in range(10, 15):
        b.record.append({"type": "tick", "i": i})
    try:
        assert control.wait_for(lambda c: c.status()["agent_0"].record_next_seq == 15, 10)
    finally:
        b.close()
    stored = [f["seq"] for t, f in records if t == "agent_record"]
    assert stored == list(range(15))


def test_an_agent_on_another_version_is_refused(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, _ = team()
    a = Agent("agent_0", server.port, tmp_path / "a0", offer_for(sets["v2"]).version)
    try:
        assert a.link.refused.wait(10)
        assert a.link.last_refusal.startswith("FAILED_PRECONDITION")
        assert not control.status()["agent_0"].linked
    finally:
        a.close()


def stores(sets: dict[str, Path], tmp_path: Path, key: bool = True) -> dict[str, ArtifactStore]:
    out = {}
    for agent in AGENTS:
        s = ArtifactStore(tmp_path / f"store_{agent}", public_key=sets["pub"] if key else None)
        s.activate(s.add_local(sets["v1"]))
        out[agent] = s
    return out


def test_a_rollout_switches_every_agent_at_the_same_named_episode(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, records = team()
    v1, v2 = offer_for(sets["v1"]).version, offer_for(sets["v2"]).version
    st = stores(sets, tmp_path)
    agents = [
        Agent(
            a,
            server.port,
            tmp_path / a,
            v1,
            store=st[a],
            stage_check=lambda f, a=a: AgentPolicy.load(f, a),
        )
        for a in AGENTS
    ]
    try:
        assert control.wait_for(lambda c: all(s.linked for s in c.status().values()), 10)
        control.start_episode(lead_s=0.0)
        control.offer(sets["v2"])
        for a in agents:
            assert a.switched.wait(20)
        assert {tuple(a.switches) for a in agents} == {((v2, 2),)}
        assert all(s.has(v2) and s.current == v1 for s in st.values())  # staged, not yet run
        ep, _ = control.start_episode(lead_s=0.0)
        assert ep == 2 and control.version == v2
    finally:
        for a in agents:
            a.close()
    kinds = [t for t, _ in records]
    assert (
        kinds.index("rollout_offered")
        < kinds.index("rollout_switch")
        < kinds.index("rollout_switched")
    )


def test_one_agent_failing_to_stage_means_no_agent_switches(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, _records = team()
    v1 = offer_for(sets["v1"]).version
    st = stores(sets, tmp_path)

    def cannot_load(folder: Path) -> None:
        AgentPolicy.load(folder, "agent_9")  # this device's graph is not in the set

    agents = [
        Agent("agent_0", server.port, tmp_path / "a0", v1, store=st["agent_0"]),
        Agent(
            "agent_1",
            server.port,
            tmp_path / "a1",
            v1,
            store=st["agent_1"],
            stage_check=cannot_load,
        ),
    ]
    try:
        control.offer(sets["v2"])
        assert control.wait_for(lambda c: bool(c.rollout and c.rollout.cancelled), 20)
        assert "agent_1" in control.rollout.cancelled  # type: ignore[union-attr]
        control.start_episode(lead_s=0.0)
        assert control.version == v1
        assert all(a.switches == [] for a in agents)
        assert all(s.current == v1 for s in st.values())
    finally:
        for a in agents:
            a.close()


def test_an_unsigned_set_is_refused_by_every_agent_and_the_team_stays(
    team: Any, sets: dict[str, Path], tmp_path: Path
) -> None:
    control, server, _ = team()
    v1 = offer_for(sets["v1"]).version
    st = stores(sets, tmp_path)
    agents = [Agent(a, server.port, tmp_path / a, v1, store=st[a]) for a in AGENTS]
    try:
        control.offer(sets["unsigned"])
        assert control.wait_for(
            lambda c: all(s.rollout.startswith("failed") for s in c.status().values()), 20
        )
        assert all("unsigned" in s.rollout for s in control.status().values())
        assert control.rollout is not None and control.rollout.switch_at is None
        assert all(a.switches == [] for a in agents) and control.version == v1
    finally:
        for a in agents:
            a.close()


def test_qmix_deploy_follows_a_rollout_to_the_switch(
    team: Any, sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qmix_edge.runtime.coordinator.deploy import main as deploy

    control, server, _ = team()
    v1, v2 = offer_for(sets["v1"]).version, offer_for(sets["v2"]).version
    st = stores(sets, tmp_path)
    agents = [Agent(a, server.port, tmp_path / a, v1, store=st[a]) for a in AGENTS]
    try:
        assert control.wait_for(lambda c: all(s.linked for s in c.status().values()), 10)
        code = deploy(["--coordinator", f"127.0.0.1:{server.port}", "--artifacts", str(sets["v2"]),
                       "--timeout-s", "30"])  # fmt: skip
    finally:
        for a in agents:
            a.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"switched: every agent runs {v2[:12]}" in out
    assert all(s.rollout == "active" for s in control.status().values())


def test_qmix_deploy_reports_a_cancelled_rollout_and_a_missing_operator_token(
    team: Any, sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qmix_edge.runtime.coordinator.deploy import main as deploy

    control, server, _ = team()
    v1 = offer_for(sets["v1"]).version
    st = stores(sets, tmp_path)
    agents = [Agent(a, server.port, tmp_path / a, v1, store=st[a]) for a in AGENTS]
    target = ["--coordinator", f"127.0.0.1:{server.port}", "--timeout-s", "30"]
    try:
        assert control.wait_for(lambda c: all(s.linked for s in c.status().values()), 10)
        assert deploy([*target, "--artifacts", str(sets["unsigned"])]) == 1
        assert "rollout cancelled" in capsys.readouterr().err
        assert control.version == v1
    finally:
        for a in agents:
            a.close()
    locked, locked_server, _ = team(operator_token="s3cret-operator-token")
    assert deploy(["--coordinator", f"127.0.0.1:{locked_server.port}", "--artifacts",
                   str(sets["v2"])]) == 2  # fmt: skip
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert locked.rollout is None


def test_qmix_mission_pauses_resumes_and_ends_the_episode_for_every_agent(
    team: Any, sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qmix_edge.runtime.coordinator import mission_cli

    control, server, records = team()
    v1 = offer_for(sets["v1"]).version
    agents = [Agent(a, server.port, tmp_path / a, v1) for a in AGENTS]
    ended = {a.link.agent_id: threading.Event() for a in agents}
    for a in agents:
        original_end = a.mission.end

        def end(at: float, original_end: Any = original_end, got: Any = ended[a.link.agent_id]):
            original_end(at)
            got.set()

        a.mission.end = end  # type: ignore[method-assign]
    address = ["--coordinator", f"127.0.0.1:{server.port}"]
    try:
        assert control.wait_for(lambda c: all(s.linked for s in c.status().values()), 10)
        assert mission_cli.main([*address, "--action", "pause"]) == 1  # nothing runs yet
        assert "nothing to pause" in capsys.readouterr().err
        ep, _ = control.start_episode(lead_s=0.0)
        assert control.due_end(10.0) < float("inf")
        assert mission_cli.main([*address, "--action", "pause", "--lead-s", "0.2"]) == 0
        assert control.phase == "paused" and control.due_end(10.0) == float("inf")
        assert mission_cli.main([*address, "--action", "resume", "--lead-s", "0.2"]) == 0
        assert mission_cli.main([*address, "--action", "end", "--lead-s", "0.2"]) == 0
        assert control.phase == "idle"
        kinds = [f["kind"] for t, f in records if t == "mission"]
        assert kinds == ["start", "pause", "resume", "end"]
        at = {f["kind"]: f["at"] for t, f in records if t == "mission"}
        for a in agents:  # every agent got the same instants: paused, running again, over
            assert ended[a.link.agent_id].wait(10)
            assert a.mission.state(at["pause"] + 0.001) == (Phase.PAUSED, ep)
            assert a.mission.state(at["resume"] + 0.001) == (Phase.RUNNING, ep)
            assert a.mission.state(at["end"] + 0.001)[0] is Phase.IDLE
        assert mission_cli.main([*address]) == 0  # status
        shown = capsys.readouterr().out
        assert f"idle, episode {ep}" in shown and "agent_1: linked" in shown
    finally:
        for a in agents:
            a.close()


def test_qmix_mission_needs_the_operator_token_when_mission_control_has_one(
    team: Any, tmp_path: Path
) -> None:
    from qmix_edge.runtime.coordinator import mission_cli

    _, server, _ = team(operator_token="s3cret-operator-token")
    address = ["--coordinator", f"127.0.0.1:{server.port}"]
    assert mission_cli.main(address) == 2  # PERMISSION_DENIED
    token = tmp_path / "op.token"
    token.write_text("s3cret-operator-token\n")
    token.chmod(0o600)
    assert mission_cli.main([*address, "--operator-token-file", str(token)]) == 0


def test_an_agent_record_forgets_stored_lines_but_can_still_send_them(tmp_path: Path) -> None:
    record = LocalRecord(tmp_path / "r.jsonl")
    for i in range(10):
        assert record.append({"i": i}) == i
    record.forget_before(6)  # mission control stored lines 0-5
    assert len(record) == 10 and record.append({"i": 10}) == 10
    assert record.lines_from(6, 2) == ['{"i":6}', '{"i":7}']
    assert record.lines_from(2, 3) == ['{"i":2}', '{"i":3}', '{"i":4}']  # read back from the file
    record.close()
    assert LocalRecord(tmp_path / "r.jsonl").lines_from(9) == ['{"i":9}', '{"i":10}']
