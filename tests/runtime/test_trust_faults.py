"""Faults asserted in-process: many agents joining at once, racing duplicates, a slow link.

- 12 agents joining concurrently (released by one barrier) are each admitted exactly once and the
  team runs without a fallback; 8 clients racing for one seat: exactly one wins, the rest are
  ALREADY_EXISTS.
- Dropped replies: each costs exactly one fallback at the deadline, nothing else.
- A slow link (a delaying TCP proxy between one agent and the coordinator): with a deadline
  above the round trip the team is exact; with a deadline below it, every decision of that agent
  arrives late, is discarded and counted, and the fallback is applied instead, never its action.
Kill -9 of processes and SIGTERM are covered end to end (tests/e2e/test_e2e_trust_eval.py,
tests/e2e/test_e2e_runtime_eval.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from runtime_doubles import SHA, FakePolicy, Harness, run_with_a_faulty_agent_1

from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import AgentSlot, Coordinator, CoordinatorConfig, TeamSpec
from qmix_edge.runtime.eval.faulty_agent import AgentFaults
from qmix_edge.runtime.field import FieldStep
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.records import Attach, Join, Step, read_records

N_AGENTS = 12


def big_team(n: int) -> TeamSpec:
    return TeamSpec(
        team_id="run-many",
        agents=tuple(
            AgentSlot(f"agent_{i}", 3, 2, fallback_action=1, sha256s=frozenset([f"{i:064x}"]))
            for i in range(n)
        ),
    )


def sensor(ctx: FieldStep) -> np.ndarray:
    return np.array([ctx.step % 3, 0, 1], np.float32)  # (obs_dim,)


def actuator(ctx: FieldStep, action: int) -> None:
    return None


@pytest.mark.slow
def test_twelve_agents_joining_at_once_are_each_admitted_exactly_once(tmp_path: Any) -> None:
    record = tmp_path / "many.jsonl"
    h = Harness(
        Coordinator(
            big_team(N_AGENTS),
            CoordinatorConfig(
                mode="field",
                episodes=2,
                episode_limit=5,
                step_period_ms=10,
                step_deadline_ms=10_000,
                team_wait_s=60,
            ),
            record_path=record,
        )
    )
    try:
        h.run_in_thread()
        barrier = threading.Barrier(N_AGENTS)
        runners = [
            AgentRunner(
                FakePolicy(f"agent_{i}", artifact_sha256=f"{i:064x}"),
                h.target,
                sensor=sensor,
                actuator=actuator,
                watchdog_s=30.0,
            )
            for i in range(N_AGENTS)
        ]

        def go(r: AgentRunner) -> None:
            barrier.wait()
            r.run()

        threads = [threading.Thread(target=go, args=(r,), daemon=True) for r in runners]
        for t in threads:
            t.start()
        summary = h.wait(120)
        for t in threads:
            t.join(30)
        assert summary.finished and [e["steps"] for e in summary.episodes] == [5, 5]
        for i in range(N_AGENTS):
            c = summary.counters[f"agent_{i}"]
            assert (c.joins, c.rejoins, c.fallbacks) == (1, 0, 0), (i, c)
        joins = [r.agent_id for r in read_records(record) if isinstance(r, Join)]
        assert sorted(joins) == sorted(f"agent_{i}" for i in range(N_AGENTS))
        assert all(r.stats.sessions == 1 and r.stats.steps == 10 for r in runners)
    finally:
        h.coordinator.close(grace_s=0.5)


def test_racing_joins_for_one_seat_admit_exactly_one(make_harness: Any) -> None:
    h = make_harness()
    n = 8
    barrier = threading.Barrier(n)
    codes: list[grpc.StatusCode] = []
    lock = threading.Lock()

    def race() -> None:
        stub = pb_grpc.TeamStub(h.channel())
        req = pb.JoinRequest(
            protocol_version=wire.PROTOCOL_VERSION,
            agent_id="agent_0",
            artifact_sha256=SHA["agent_0"],
            client_name="racer",
        )
        barrier.wait()
        try:
            stub.Join(req, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=race) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(c.name for c in codes) == ["ALREADY_EXISTS"] * (n - 1) + ["OK"]
    assert h.coordinator.counters["agent_0"].joins == 1


# ------------------------------------------------------------------------------ slow link
class DelayProxy:
    """A TCP proxy on 127.0.0.1:<free port> that delays every chunk by ``delay_s`` each way
    (latency, order kept), run on its own event loop thread."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.delay_s = delay_s
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._conn, "127.0.0.1", 0)

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pump(r, uw), self._pump(ur, w), return_exceptions=True)

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                t, data = await q.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, t + self.delay_s - time.monotonic()))
                w.write(data)
                await w.drain()
            w.close()

        sender = asyncio.ensure_future(send())
        try:
            while data := await r.read(65536):
                q.put_nowait((time.monotonic(), data))
        finally:
            q.put_nowait((time.monotonic(), b""))
            with contextlib.suppress(Exception):
                await sender

    async def _shutdown(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    made: list[DelayProxy] = []

    def make(port: int, delay_s: float) -> DelayProxy:
        p = DelayProxy(port, delay_s)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def run_with_slow_agent_1(h: Harness, proxy_factory: Any, delay_s: float, carrier: str) -> Any:
    """agent_0 dials directly; agent_1 through delaying proxies, on the step lane (its gRPC and
    lane connections both proxied) or on the gRPC Steps stream."""
    h.run_in_thread()
    grpc_proxy = proxy_factory(h.port, delay_s)
    lane_proxy = proxy_factory(h.coordinator.lane_port, delay_s)
    runners = [
        AgentRunner(FakePolicy("agent_0"), h.target, watchdog_s=10.0, join_timeout_s=10.0),
        AgentRunner(
            FakePolicy("agent_1"),
            f"127.0.0.1:{grpc_proxy.port}",
            watchdog_s=10.0,
            join_timeout_s=10.0,
            step_lane=carrier == "lane",
            step_lane_address=f"127.0.0.1:{lane_proxy.port}" if carrier == "lane" else None,
        ),
    ]
    for r in runners:
        threading.Thread(target=r.run, daemon=True).start()
    summary = h.wait(60)
    carriers = {
        r.agent_id: r.carrier
        for r in read_records(h.coordinator.record_path)
        if isinstance(r, Attach)
    }
    assert carriers["agent_1"] == carrier
    return summary


@pytest.mark.parametrize("carrier", ["lane", "stream"])
def test_slow_link_within_the_deadline_is_exact(
    make_harness: Any, proxy_factory: Any, carrier: str
) -> None:
    h = make_harness(episodes=3, step_deadline_ms=5000)
    summary = run_with_slow_agent_1(h, proxy_factory, 0.03, carrier)  # 30 ms each way
    assert summary.finished
    assert summary.counters["agent_1"].fallbacks == 0
    assert summary.counters["agent_1"].late_replies == 0
    steps = [r for r in read_records(h.coordinator.record_path) if isinstance(r, Step)]
    # the round trip through the link is at least 2 x 30 ms (a lower bound, not a timing)
    assert len(steps) == 6 and all(r.exchange_us >= 60_000 for r in steps)


@pytest.mark.parametrize("carrier", ["lane", "stream"])
def test_slow_link_beyond_the_deadline_is_never_applied(
    make_harness: Any, proxy_factory: Any, carrier: str
) -> None:
    # 2 x 60 ms round trip against a 30 ms deadline: every agent_1 decision arrives late
    h = make_harness(episodes=3, step_deadline_ms=30, lease_steps=1000, team_wait_s=10)
    summary = run_with_slow_agent_1(h, proxy_factory, 0.06, carrier)
    assert summary.finished
    steps = [r for r in read_records(h.coordinator.record_path) if isinstance(r, Step)]
    assert len(steps) == 6
    assert all("agent_1" in r.fallback and r.actions[1] == 1 for r in steps)
    c = summary.counters["agent_1"]
    assert c.fallbacks == 6 and c.late_replies >= 1


@pytest.mark.parametrize("torn", ['{"type":"step","epi', "x" * 70_000])
def test_record_writer_cuts_a_torn_last_line_before_appending(tmp_path: Any, torn: str) -> None:
    from qmix_edge.runtime.records import RecordWriter

    path = tmp_path / "run.jsonl"
    path.write_text('{"type":"run_start"}\n{"type":"step","step":0}\n' + torn)
    w = RecordWriter(path)
    w.write(
        "run_start",
        coordinator_instance="c",
        team_id="t",
        mode="simulation",
        resumed_from=0,
        time=0.0,
    )
    w.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["run_start", "step", "run_start"]


def test_dropped_replies_each_cost_exactly_one_fallback(make_harness: Any) -> None:
    h = make_harness(episodes=8, step_deadline_ms=500, lease_steps=1000, team_wait_s=10)
    summary, lossy = run_with_a_faulty_agent_1(h, AgentFaults(drop_fraction=0.5, drop_seed=3))
    assert summary.finished
    steps = [r for r in read_records(h.coordinator.record_path) if isinstance(r, Step)]
    assert len(steps) == 16
    dropped = lossy.dropped
    assert 0 < dropped < 16  # seeded: some, not all
    c = summary.counters["agent_1"]
    assert c.fallbacks == dropped and c.late_replies == 0
    assert sum("agent_1" in r.fallback for r in steps) == dropped
    assert summary.counters["agent_0"].fallbacks == 0
