"""The coordinator in-process on port 0: join refusals, deadlines, stale replies, leases, health."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from runtime_doubles import SHA, FakePolicy, Harness

from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import (
    Authority,
    Coordinator,
    CoordinatorConfig,
    Credentials,
    Refusal,
)
from qmix_edge.runtime.errors import RuntimeFailure, TeamMismatchError
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.records import Record, RunEnd, Step, read_records


def join_request(agent_id: str = "agent_0", sha: str | None = None, **kw: Any) -> pb.JoinRequest:
    fields: dict[str, Any] = {
        "protocol_version": wire.PROTOCOL_VERSION,
        "agent_id": agent_id,
        "artifact_sha256": SHA.get(agent_id, "0" * 64) if sha is None else sha,
        "client_name": "test",
        **kw,
    }
    return pb.JoinRequest(**fields)


class ManualAgent:
    """A hand-driven agent: the test decides what and when it answers."""

    def __init__(self, h: Harness, agent_id: str) -> None:
        self.channel = h.channel()
        self.stub = pb_grpc.TeamStub(self.channel)
        self.join = self.stub.Join(join_request(agent_id), timeout=5)
        self.out: queue.SimpleQueue[pb.AgentMessage | None] = queue.SimpleQueue()
        self.out.put(pb.AgentMessage(attach=pb.Attach(session_id=self.join.session_id)))
        self.call = self.stub.Steps(self._messages())
        self.inbox: queue.SimpleQueue[pb.CoordinatorMessage | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _messages(self) -> Iterator[pb.AgentMessage]:
        while (m := self.out.get()) is not None:
            yield m

    def _read(self) -> None:
        try:
            for m in self.call:
                self.inbox.put(m)
        except grpc.RpcError:
            pass
        self.inbox.put(None)

    def next(self, kind: str, timeout: float = 10.0) -> Any:
        """The next message of ``kind`` (others are skipped)."""
        while True:
            m = self.inbox.get(timeout=timeout)
            if m is None:
                raise AssertionError(f"stream ended while waiting for {kind}")
            if m.WhichOneof("kind") == kind:
                return getattr(m, kind)

    def reply(self, episode_id: int, step: int, action: int) -> None:
        self.out.put(
            pb.AgentMessage(
                step_reply=pb.StepReply(episode_id=episode_id, step=step, action=action)
            )
        )

    def close(self) -> None:
        self.out.put(None)
        self.call.cancel()
        self.channel.close()


def start_runner(h: Harness, agent_id: str) -> AgentRunner:
    runner = AgentRunner(FakePolicy(agent_id), h.target, watchdog_s=5.0)
    threading.Thread(target=runner.run, daemon=True).start()
    return runner


def records(h: Harness) -> list[Record]:
    assert h.coordinator.record_path is not None
    return list(read_records(h.coordinator.record_path))


# ------------------------------------------------------------------------------------ joins
@pytest.mark.parametrize(
    ("request_kwargs", "code", "match"),
    [
        ({"agent_id": "agent_7"}, grpc.StatusCode.NOT_FOUND, "not in team run-test"),
        ({"sha": "ab" * 32}, grpc.StatusCode.FAILED_PRECONDITION, "another run"),
        ({"sha": "xyz"}, grpc.StatusCode.INVALID_ARGUMENT, "64 lowercase hex"),
        ({"agent_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty"),
        ({"protocol_version": 0}, grpc.StatusCode.FAILED_PRECONDITION, "protocol version"),
        ({"protocol_version": 1}, grpc.StatusCode.FAILED_PRECONDITION, "version 1 is not spoken"),
    ],
)
def test_join_refusals_have_exact_status_codes(
    make_harness: Any, request_kwargs: dict[str, Any], code: grpc.StatusCode, match: str
) -> None:
    h = make_harness()
    stub = pb_grpc.TeamStub(h.channel())
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(join_request(**request_kwargs), timeout=5)
    assert info.value.code() == code
    assert match in info.value.details()


def test_second_live_agent_with_same_id_is_refused(make_harness: Any) -> None:
    h = make_harness()
    first = ManualAgent(h, "agent_0")
    stub = pb_grpc.TeamStub(h.channel())
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(join_request("agent_0"), timeout=5)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    first.close()


def test_attach_with_unknown_session_is_not_found(make_harness: Any) -> None:
    h = make_harness()
    stub = pb_grpc.TeamStub(h.channel())
    call = stub.Steps(iter([pb.AgentMessage(attach=pb.Attach(session_id="nope"))]))
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_env_that_does_not_match_the_team_is_refused() -> None:
    from runtime_doubles import two_step_team

    from qmix_edge.envs import MatrixGame

    with pytest.raises(TeamMismatchError, match="the artifact expects"):
        Coordinator(two_step_team(), CoordinatorConfig(), env=MatrixGame([[1.0, 0.0], [0.0, 1.0]]))


# ------------------------------------------------------------------------------ the clock
def test_full_team_runs_episodes_and_records_them(make_harness: Any) -> None:
    h = make_harness(episodes=3)
    h.run_in_thread()
    policies = []
    for a in ("agent_0", "agent_1"):
        r = start_runner(h, a)
        policies.append(r.policy)
    summary = h.wait()
    assert summary.finished
    assert [e["steps"] for e in summary.episodes] == [2, 2, 2]
    recs = records(h)
    steps = [r for r in recs if isinstance(r, Step)]
    assert len(steps) == 6 and all(r.fallback == () for r in steps)
    # Each agent saw only its own observation, at its true size, bit for bit.
    for p in policies:
        assert all(obs.shape == (3,) and obs.dtype.name == "float32" for obs, _ in p.seen)
        assert p.resets >= 3  # join + one per episode
    assert isinstance(recs[-1], RunEnd) and recs[-1].finished is True


def test_missed_deadline_gives_fallback_and_stale_reply_is_never_applied(make_harness: Any) -> None:
    h = make_harness(episodes=1, step_deadline_ms=1000, lease_steps=5)
    h.run_in_thread()
    start_runner(h, "agent_0")
    slow = ManualAgent(h, "agent_1")
    req0 = slow.next("step_request")
    assert (req0.step, req0.team_step) == (0, 0)
    # No answer to step 0: the deadline passes and the fallback (1) is applied.
    req1 = slow.next("step_request")
    assert req1.step == 1 and req1.episode_id == req0.episode_id
    assert req1.previous_action == 1  # the action really applied for this agent
    slow.reply(req0.episode_id, 0, action=0)  # late: answers step 0 while step 1 is in flight
    slow.reply(req0.episode_id + 99, 1, action=0)  # stale: another episode
    slow.reply(req1.episode_id, 1, action=1)  # the real answer to step 1
    summary = h.wait()
    slow.close()
    steps = [r for r in records(h) if isinstance(r, Step)]
    assert steps[0].actions[1] == 1 and steps[0].fallback == ("agent_1",)
    assert steps[1].actions[1] == 1 and steps[1].fallback == ()
    assert steps[1].late == {"agent_1": 2}
    c = summary.counters["agent_1"]
    assert (c.fallbacks, c.late_replies) == (1, 2)
    assert summary.counters["agent_0"].late_replies == 0


def test_invalid_action_is_replaced_by_fallback(make_harness: Any) -> None:
    h = make_harness(episodes=1, step_deadline_ms=2000)
    h.run_in_thread()
    start_runner(h, "agent_0")
    bad = ManualAgent(h, "agent_1")
    req = bad.next("step_request")
    bad.reply(req.episode_id, req.step, action=7)  # agent_1 has 2 actions
    req = bad.next("step_request")
    bad.reply(req.episode_id, req.step, action=0)
    summary = h.wait()
    bad.close()
    assert summary.counters["agent_1"].invalid_actions == 1
    steps = [r for r in records(h) if isinstance(r, Step)]
    assert steps[0].fallback == ("agent_1",) and steps[0].actions[1] == 1


@pytest.mark.parametrize("policy", ["abort_episode", "continue_degraded"])
def test_lease_expiry_and_team_policy(make_harness: Any, policy: str) -> None:
    h = make_harness(
        episodes=2, step_deadline_ms=500, lease_steps=2, team_policy=policy, team_wait_s=0.2
    )
    h.run_in_thread()
    start_runner(h, "agent_0")
    silent = ManualAgent(h, "agent_1")
    bye = silent.next("goodbye")
    assert bye.reason == pb.GOODBYE_REASON_LEASE_EXPIRED
    summary = h.wait()
    silent.close()
    first, second = summary.episodes
    c = summary.counters["agent_1"]
    assert c.deaths == 1
    steps = [r for r in records(h) if isinstance(r, Step) and r.episode_index == 0]
    if policy == "abort_episode":
        assert first["reason"].startswith("aborted: agent_1")
        assert steps[-1].applied is False and first["steps"] == 2
    else:
        assert first["reason"] == "terminated" and all(s.applied for s in steps)
    # The dead agent is gone: the next episode runs with its fallback, without waiting for it;
    # under abort_episode its continued silence aborts that episode too.
    if policy == "abort_episode":
        assert second["reason"].startswith("aborted: agent_1")
    else:
        assert second["reason"] == "terminated"
    later = [r for r in records(h) if isinstance(r, Step) and r.episode_index == 1]
    assert all(r.fallback == ("agent_1",) for r in later)
    assert all(r.exchange_us < 500_000 for r in later)  # never waited for the deadline


def test_killed_agent_rejoins_and_its_state_is_reset(make_harness: Any) -> None:
    h = make_harness(episodes=3, step_deadline_ms=2000, team_wait_s=10)
    h.run_in_thread()
    start_runner(h, "agent_0")
    victim = ManualAgent(h, "agent_1")
    req = victim.next("step_request")
    victim.close()  # the device dies mid-episode: not waited for, fallback counted
    runner = start_runner(h, "agent_1")
    summary = h.wait()
    c = summary.counters["agent_1"]
    assert c.joins == 2 and c.rejoins == 1 and c.disconnects >= 1
    assert c.fallbacks >= 1
    assert summary.finished and len(summary.episodes) == 3
    assert runner.policy.resets >= 1  # type: ignore[attr-defined]
    assert req.step == 0


# ---------------------------------------------------------------------------- serving
def test_health_reports_serving_then_not_serving_on_stop(make_harness: Any) -> None:
    h = make_harness()
    health = health_pb2_grpc.HealthStub(h.channel())
    for service in ("", wire.HEALTH_SERVICE):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    h.coordinator.request_stop()
    status = health.Check(
        health_pb2.HealthCheckRequest(service=wire.HEALTH_SERVICE), timeout=5
    ).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.TeamStub(h.channel()).Join(join_request(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_stop_finishes_the_step_in_flight_and_says_goodbye(make_harness: Any) -> None:
    h = make_harness(episodes=5, step_deadline_ms=5000)
    h.run_in_thread()
    start_runner(h, "agent_0")
    a = ManualAgent(h, "agent_1")
    req = a.next("step_request")
    h.coordinator.request_stop()  # a step is in flight: it completes
    a.reply(req.episode_id, req.step, 1)
    bye = a.next("goodbye")
    assert bye.reason == pb.GOODBYE_REASON_SHUTDOWN
    summary = h.wait()
    a.close()
    assert not summary.finished
    assert summary.episodes[-1]["reason"] == "stopped"
    steps = [r for r in records(h) if isinstance(r, Step)]
    assert steps[-1].step == req.step and steps[-1].fallback == ()


def test_port_in_use_fails_loudly(make_harness: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        from runtime_doubles import two_step_team

        from qmix_edge.envs import TwoStepGame

        c = Coordinator(two_step_team(), CoordinatorConfig(), env=TwoStepGame())
        with pytest.raises(RuntimeFailure, match="in use"):
            c.start(f"127.0.0.1:{port}")


def test_oversized_message_is_refused_and_server_stays_up(make_harness: Any) -> None:
    h = make_harness(max_message_bytes=1024)
    stub = pb_grpc.TeamStub(h.channel())
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(join_request(client_name="x" * 4096), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Join(join_request(), timeout=5).session_id


# ------------------------------------------------------------------------ the identity rule
TOKENS = {"agent_0": "token-0", "agent_1": "token-1"}


@pytest.mark.parametrize(
    ("mutual_tls", "tokens", "caller", "code"),
    [
        (False, None, Credentials("p"), None),  # no identity configured: anyone
        (False, TOKENS, Credentials("p", token="token-0"), None),
        (False, TOKENS, Credentials("p", token="token-0", token_agent_id="agent_0"), None),
        (False, TOKENS, Credentials("p"), grpc.StatusCode.UNAUTHENTICATED),
        (False, TOKENS, Credentials("p", token="token-1"), grpc.StatusCode.UNAUTHENTICATED),
        (
            False,
            TOKENS,
            Credentials("p", token="token-1", token_agent_id="agent_1"),
            grpc.StatusCode.PERMISSION_DENIED,  # proven to be agent_1
        ),
        (
            False,
            TOKENS,
            Credentials("p", token="forged", token_agent_id="agent_1"),
            grpc.StatusCode.UNAUTHENTICATED,  # claims agent_1 without its token: proves nothing
        ),
        (True, None, Credentials("p", certificate="agent_0"), None),
        (True, None, Credentials("p", certificate="agent_1"), grpc.StatusCode.PERMISSION_DENIED),
        (True, None, Credentials("p"), grpc.StatusCode.PERMISSION_DENIED),  # names nobody
        (True, TOKENS, Credentials("p", certificate="agent_0", token="token-0"), None),
        (
            True,
            TOKENS,
            Credentials("p", certificate="agent_1", token="token-0"),
            grpc.StatusCode.PERMISSION_DENIED,  # the token and the certificate disagree
        ),
    ],
)
def test_one_identity_rule_for_every_carrier(
    mutual_tls: bool,
    tokens: dict[str, str] | None,
    caller: Credentials,
    code: grpc.StatusCode | None,
) -> None:
    authority = Authority(["agent_0", "agent_1"], mutual_tls=mutual_tls, tokens=tokens)
    if code is None:
        authority.authorize(caller, "agent_0", "a Join")
        return
    with pytest.raises(Refusal) as refused:
        authority.authorize(caller, "agent_0", "a Join")
    assert refused.value.code == code
    assert "agent_0" in refused.value.detail


# ---------------------------------------------------------------------- observers and CLI
def test_wait_until_gives_up_after_its_timeout_and_sees_seats(make_harness: Any) -> None:
    h = make_harness()
    assert h.coordinator.wait_until(lambda c: False, 0.01) is False
    agent = ManualAgent(h, "agent_0")
    assert h.coordinator.wait_until(lambda c: c.live_agents() == ("agent_0",), 10)
    assert h.coordinator.session_agent(agent.join.session_id) == "agent_0"
    # closed once attached (a stream cancelled before its attach arrives leaves a joined session
    # that only the attach timeout ends)
    assert h.coordinator.wait_until(lambda c: "agent_0" in c.attached_agents(), 10)
    agent.close()
    assert h.coordinator.wait_until(lambda c: c.live_agents() == (), 30)
    assert h.coordinator.session_agent(agent.join.session_id) is None


def test_an_agent_gone_the_instant_it_attached_frees_its_seat_every_time(
    make_harness: Any,
) -> None:
    # The client cancels while the coordinator may still be writing Attached (the seat shows as
    # attached before that write ends). Each cycle lost the seat for good about one time in
    # eight before the Steps handler freed it on every way out; 60 cycles catch that.
    h = make_harness()
    for cycle in range(60):
        agent = ManualAgent(h, "agent_0")  # a seat still held would refuse this Join
        assert h.coordinator.wait_until(lambda c: "agent_0" in c.attached_agents(), 10)
        agent.close()
        assert h.coordinator.wait_until(lambda c: c.live_agents() == (), 10), f"cycle {cycle}"


def test_a_bug_in_the_cli_is_raised_with_its_traceback_not_called_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qmix_edge.runtime.coordinator import TeamSpec, main

    def broken(*args: Any, **kwargs: Any) -> TeamSpec:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(TeamSpec, "from_artifacts", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):  # python -m: traceback, exit 1
        main(["--artifacts", "/nonexistent"])
    monkeypatch.undo()
    assert main(["--artifacts", "/nonexistent"]) == 2  # the missing artifact is a config error
