"""The abuse suite: hostile and broken inputs against a live coordinator, each answered with its
exact status code (or, where the protocol has no error to answer, discarded and counted), and
after every case the coordinator still serves the honest team (a new step completes with the
honest agent's own decision).

Two arenas, each a coordinator in-process on port 0 running steps continuously (paced, 20 ms)
with an honest ``agent_1`` connected all along (joined on the step lane alone, without gRPC);
``agent_0``'s seat is left to the abusers:
- ``mtls``: mutual TLS (agent certificates name their agent id);
- ``tokens``: TLS plus per-agent bearer tokens.
A table of every case and its outcome is printed at the end of the module run.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_doubles import SHA, CountingAnswerer, FakePolicy, Harness, two_step_team
from trust_pki import Pki, make_pki

from qmix_edge.envs import TwoStepGame
from qmix_edge.runtime import lane, wire
from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig
from qmix_edge.runtime.lane import LaneClient
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.records import Step, read_records
from qmix_edge.runtime.security import ClientTls, ServerTls, token_metadata

TOKENS = {"agent_0": "abuse-token-0-" + "q" * 20, "agent_1": "abuse-token-1-" + "w" * 20}
METHODS = ("Join", "Steps", "Leave")
# Bytes no protobuf parser accepts: a 10-byte varint tag that never ends.
GARBAGE = b"\xff" * 11
Code = grpc.StatusCode


# --------------------------------------------------------------------------------- the table
@dataclass
class Row:
    arena: str
    case: str
    expected: str
    observed: str
    serving: str


ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def outcome_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = [
        "| arena | abuse case | expected | observed | honest team served after |",
        "|---|---|---|---|---|",
        *(f"| {r.arena} | {r.case} | {r.expected} | {r.observed} | {r.serving} |" for r in ROWS),
    ]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(f"abuse cases and outcomes ({len(ROWS)}):")
            for line in lines:
                reporter.write_line(line)


# -------------------------------------------------------------------------------- the arenas
class Arena:
    """A continuously stepping coordinator with an honest agent_1 and a free agent_0 seat."""

    def __init__(self, name: str, pki: Pki, tmp: Path, *, tokens: bool) -> None:
        self.name = name
        self.pki = pki
        self.tokens = tokens
        tls = ServerTls(pki.server_cert, pki.server_key, None if tokens else pki.ca)
        self.h = Harness(
            Coordinator(
                two_step_team(),
                CoordinatorConfig(
                    episodes=0,
                    step_period_ms=20,
                    step_deadline_ms=2000,
                    lease_steps=10_000,
                    team_policy="continue_degraded",
                    team_wait_s=0.1,
                    max_message_bytes=wire.MAX_MESSAGE_BYTES,
                ),
                env=TwoStepGame(),
                record_path=tmp / f"{name}.jsonl",
                tls=tls,
                tokens=TOKENS if tokens else None,
            )
        )
        self.c = self.h.coordinator
        self.h.run_in_thread()
        self.honest = self.runner("agent_1", lane_only=True)
        self.honest_thread = threading.Thread(target=self.honest.run, daemon=True)
        self.honest_thread.start()
        self.wait_served()

    def runner(self, agent_id: str, *, lane_only: bool = False) -> AgentRunner:
        """An honest agent: joining over gRPC, or (``lane_only``) on the step lane alone."""
        c = self.pki.agents[agent_id]
        return AgentRunner(
            FakePolicy(agent_id),
            None if lane_only else self.h.target,
            step_lane_address=f"127.0.0.1:{self.c.lane_port}" if lane_only else None,
            watchdog_s=10.0,
            tls=ClientTls(
                self.pki.ca, None if self.tokens else c.cert, None if self.tokens else c.key
            ),
            token=TOKENS[agent_id] if self.tokens else None,
            answerer=CountingAnswerer,
        )

    def channel(self, cert: str | None = "agent_0") -> grpc.Channel:
        """A TLS channel (with ``cert``'s client certificate in the mTLS arena)."""
        c = self.pki.agents[cert] if cert and not self.tokens else None
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.pki.ca.read_bytes(),
            private_key=c.key.read_bytes() if c else None,
            certificate_chain=c.cert.read_bytes() if c else None,
        )
        return grpc.secure_channel(
            self.h.target, creds, options=[("grpc.max_send_message_length", 4 << 20)]
        )

    def metadata(self, agent_id: str = "agent_0") -> Any:
        return token_metadata(agent_id, TOKENS[agent_id]) if self.tokens else None

    def wait_served(self, timeout: float = 20.0) -> None:
        """A new team step completes with the honest agent's own decision (no fallback)."""
        c = self.c.counters["agent_1"]
        fallbacks, before = c.fallbacks, c.decisions
        served = self.c.wait_until(
            lambda _: c.decisions >= before + 2 or not self.honest_thread.is_alive(), timeout
        )
        assert self.honest_thread.is_alive(), f"{self.name}: the honest agent exited"
        assert served, f"{self.name}: the honest agent is not served"
        assert c.fallbacks == fallbacks, f"{self.name}: the honest agent got a fallback"
        health = health_pb2_grpc.HealthStub(self.channel())
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.honest.stop()
        self.c.close(grace_s=0.5)
        self.honest_thread.join(10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("abuse-pki"))


@pytest.fixture(scope="module")
def mtls(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    a = Arena("mtls", pki, tmp_path_factory.mktemp("mtls"), tokens=False)
    yield a
    a.close()


@pytest.fixture(scope="module")
def tokens(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    a = Arena("tokens", pki, tmp_path_factory.mktemp("tokens"), tokens=True)
    yield a
    a.close()


def observe(arena: Arena, case: str, expected: Any, fn: Callable[[], Any]) -> Any:
    """Run one abuse case: ``fn`` returns the observed outcome (a StatusCode or a short text).
    Asserts it equals ``expected`` and that the honest team is still served; records the row."""
    try:
        observed = fn()
    except grpc.RpcError as e:
        observed = e.code()  # type: ignore[attr-defined]
    except AssertionError as e:
        ROWS.append(Row(arena.name, case, str(expected), f"FAILED: {e}", "-"))
        raise
    shown = observed.name if isinstance(observed, grpc.StatusCode) else str(observed)
    want = expected.name if isinstance(expected, grpc.StatusCode) else str(expected)
    try:
        arena.wait_served()
        serving = "yes"
    except AssertionError as e:
        serving = f"NO ({e})"
    ROWS.append(Row(arena.name, case, want, shown, serving))
    assert observed == expected, f"{case}: expected {want}, observed {shown}"
    assert serving == "yes", serving
    return observed


def status_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code ``call`` ends with (OK if it returns)."""
    try:
        call()
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()  # type: ignore[attr-defined]
        return code
    return grpc.StatusCode.OK


def raw_call(arena: Arena, method: str, payload: bytes, *, cert: str | None = "agent_0") -> Any:
    """Send raw bytes (identity serializers) to one Team method; returns the status code."""
    ch = arena.channel(cert)
    path = f"/qmix_edge.v1.Team/{method}"
    md = arena.metadata()
    try:
        if method == "Steps":
            call = ch.stream_stream(path)
            return status_of(lambda: list(call(iter([payload]), timeout=5, metadata=md)))
        return status_of(lambda: ch.unary_unary(path)(payload, timeout=5, metadata=md))
    finally:
        ch.close()


def join_request(agent_id: str = "agent_0", **kw: Any) -> pb.JoinRequest:
    fields: dict[str, Any] = {
        "protocol_version": wire.PROTOCOL_VERSION,
        "agent_id": agent_id,
        "artifact_sha256": SHA.get(agent_id, "0" * 64),
        "client_name": "abuser",
        **kw,
    }
    return pb.JoinRequest(**fields)


def give_back_seat(arena: Arena, stub: Any, session_id: str) -> None:
    """Leave agent_0's seat when an abuse case's session still holds it."""
    if arena.c.session_agent(session_id) is not None:
        stub.Leave(
            pb.LeaveRequest(session_id=session_id, reason="abuse case over"),
            timeout=5,
            metadata=arena.metadata(),
        )


class Session:
    """An abuser holding agent_0's seat with a Steps stream it drives by hand."""

    def __init__(self, arena: Arena, cert: str = "agent_0") -> None:
        self.arena = arena
        self.channel = arena.channel(cert)
        self.stub = pb_grpc.TeamStub(self.channel)
        md = arena.metadata()
        self.join = self.stub.Join(join_request(), timeout=5, metadata=md)
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.out.put(pb.AgentMessage(attach=pb.Attach(session_id=self.join.session_id)))
        raw = self.channel.stream_stream(
            "/qmix_edge.v1.Team/Steps",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=pb.CoordinatorMessage.FromString,
        )
        self.call = raw(self._messages(), metadata=md)
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.code: grpc.StatusCode | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _messages(self) -> Iterator[Any]:
        while (m := self.out.get()) is not None:
            yield m

    def _read(self) -> None:
        try:
            for m in self.call:
                self.inbox.put(m)
            self.code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.code = e.code()  # type: ignore[attr-defined]
        self.inbox.put(None)

    def next_request(self, timeout: float = 10.0) -> pb.StepRequest:
        while True:
            m = self.inbox.get(timeout=timeout)
            assert m is not None, f"stream ended ({self.code})"
            if m.WhichOneof("kind") == "step_request":
                return m.step_request

    def reply(self, episode_id: int, step: int, action: int) -> None:
        self.out.put(
            pb.AgentMessage(
                step_reply=pb.StepReply(episode_id=episode_id, step=step, action=action)
            )
        )

    def ended_with(self, timeout: float = 10.0) -> grpc.StatusCode | None:
        deadline = time.monotonic() + timeout
        while self.inbox.get(timeout=max(0.01, deadline - time.monotonic())) is not None:
            pass
        return self.code

    def close(self) -> None:
        give_back_seat(self.arena, self.stub, self.join.session_id)
        self.out.put(None)
        self.call.cancel()
        self.channel.close()


# ----------------------------------------------------------------------------- garbage bytes
@pytest.mark.parametrize("method", METHODS)
def test_garbage_bytes_on_every_rpc(mtls: Arena, method: str) -> None:
    observe(
        mtls,
        f"garbage bytes on {method}",
        Code.INVALID_ARGUMENT,
        lambda: raw_call(mtls, method, GARBAGE),
    )


# Parsable-by-accident payloads may get any refusal the protocol defines, but never a crash
# (INTERNAL/UNKNOWN), and the team goes on.
FUZZ_ALLOWED = {
    "Join": {Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.PERMISSION_DENIED},
    "Steps": {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.OK},
    "Leave": {Code.INVALID_ARGUMENT, Code.OK},
}


def fuzzed(send: Callable[[bytes], Any], allowed: set[Code], what: str) -> str:
    """Send 25 hypothesis-chosen payloads (0-512 bytes) with ``send``; each answer must be in
    ``allowed``. Returns the allowed codes' names when every answer was one of them."""
    seen: set[str] = set()

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(st.binary(min_size=0, max_size=512))
    def fuzz(payload: bytes) -> None:
        got = send(payload)
        seen.add(got.name if isinstance(got, Code) else str(got))
        assert got in allowed, f"{what} answered {got} to {payload!r}"

    fuzz()
    names = {c.name for c in allowed}
    return "/".join(sorted(names if seen <= names else seen))


@pytest.mark.parametrize("method", METHODS)
def test_fuzzed_bytes_on_every_rpc(mtls: Arena, method: str) -> None:
    allowed = FUZZ_ALLOWED[method]
    observe(
        mtls,
        f"25 fuzzed payloads on {method}",
        "/".join(sorted(c.name for c in allowed)),
        lambda: fuzzed(lambda p: raw_call(mtls, method, p), allowed, method),
    )


def test_garbage_after_attach_ends_only_that_session(mtls: Arena) -> None:
    def case() -> Any:
        s = Session(mtls)
        s.next_request()
        before = mtls.c.counters["agent_0"].malformed
        s.out.put(GARBAGE)
        code = s.ended_with()
        s.close()
        assert mtls.c.counters["agent_0"].malformed == before + 1
        return code

    observe(mtls, "garbage bytes mid-stream (after attach)", Code.INVALID_ARGUMENT, case)


def test_stream_not_starting_with_attach(mtls: Arena) -> None:
    msg = pb.AgentMessage(step_reply=pb.StepReply(episode_id=1, step=0, action=0))
    observe(
        mtls,
        "Steps stream starting with a step_reply",
        Code.INVALID_ARGUMENT,
        lambda: raw_call(mtls, "Steps", msg.SerializeToString()),
    )


# ---------------------------------------------------------------------- oversized messages
def test_oversized_join(mtls: Arena) -> None:
    big = join_request(client_name="x" * (wire.MAX_MESSAGE_BYTES + 1024))
    observe(
        mtls,
        "oversized Join (> 64 KiB)",
        Code.RESOURCE_EXHAUSTED,
        lambda: raw_call(mtls, "Join", big.SerializeToString()),
    )


def test_oversized_step_message(mtls: Arena) -> None:
    big = pb.AgentMessage(attach=pb.Attach(session_id="s" * (wire.MAX_MESSAGE_BYTES + 1024)))
    observe(
        mtls,
        "oversized Steps message (> 64 KiB)",
        Code.RESOURCE_EXHAUSTED,
        lambda: raw_call(mtls, "Steps", big.SerializeToString()),
    )


# --------------------------------------------------------------------- ids and identities
def join_status(
    arena: Arena, req: pb.JoinRequest, cert: str | None = "agent_0", md: Any = "own"
) -> Any:
    ch = arena.channel(cert)
    try:
        stub = pb_grpc.TeamStub(ch)
        metadata = arena.metadata() if md == "own" else md
        code = status_of(lambda: stub.Join(req, timeout=5, metadata=metadata))
        if code == Code.OK:  # give the seat back
            raise AssertionError("the abusive Join was admitted")
        return code
    finally:
        ch.close()


@pytest.mark.parametrize(
    ("case", "cert", "req", "code"),
    [
        (
            "unknown agent id (own cert names it)",
            "agent_9",
            join_request("agent_9"),
            Code.NOT_FOUND,
        ),
        (
            "claims another id than its cert (agent_0 cert, agent_7 id)",
            "agent_0",
            join_request("agent_7"),
            Code.PERMISSION_DENIED,
        ),
        (
            "another agent's certificate (agent_1 cert joins as agent_0)",
            "agent_1",
            join_request("agent_0"),
            Code.PERMISSION_DENIED,
        ),
        (
            "duplicate live agent id (agent_1 again)",
            "agent_1",
            join_request("agent_1"),
            Code.ALREADY_EXISTS,
        ),
        (
            "artifact of another run (sha256 mismatch)",
            "agent_0",
            join_request(artifact_sha256="ab" * 32),
            Code.FAILED_PRECONDITION,
        ),
        (
            "malformed artifact hash",
            "agent_0",
            join_request(artifact_sha256="zz"),
            Code.INVALID_ARGUMENT,
        ),
        (
            "unknown protocol version",
            "agent_0",
            join_request(protocol_version=99),
            Code.FAILED_PRECONDITION,
        ),
        ("client without a certificate", None, join_request(), Code.UNAVAILABLE),
        (
            "certificate from another CA (CN agent_0)",
            "rogue_agent_0",
            join_request(),
            Code.UNAVAILABLE,
        ),
    ],
)
def test_identity_abuse_mtls(
    mtls: Arena, case: str, cert: str | None, req: pb.JoinRequest, code: Code
) -> None:
    observe(mtls, case, code, lambda: join_status(mtls, req, cert))
    if cert in (None, "rogue_agent_0"):
        return  # the lane's TLS refusals: test_step_lane_tls_handshake_refused
    observe(mtls, f"step lane join: {case}", code, lambda: lane_join_status(mtls, req, cert))


@pytest.mark.parametrize(
    ("case", "md", "req", "code"),
    [
        ("no token", (), join_request(), Code.UNAUTHENTICATED),
        ("wrong token", token_metadata("agent_0", "x" * 32), join_request(), Code.UNAUTHENTICATED),
        (
            "another agent's token under its id",
            token_metadata("agent_1", TOKENS["agent_1"]),
            join_request(),
            Code.PERMISSION_DENIED,
        ),
        (
            "another agent's token under own id",
            token_metadata("agent_0", TOKENS["agent_1"]),
            join_request(),
            Code.UNAUTHENTICATED,
        ),
        (
            "token for an unknown id",
            token_metadata("agent_9", TOKENS["agent_0"]),
            join_request(),
            Code.UNAUTHENTICATED,
        ),
    ],
)
def test_token_abuse(tokens: Arena, case: str, md: Any, req: pb.JoinRequest, code: Code) -> None:
    observe(tokens, case, code, lambda: join_status(tokens, req, None, md))


@pytest.mark.parametrize(
    ("case", "req", "token"),
    [
        ("no token", join_request(), ""),
        ("wrong token", join_request(), "x" * 32),
        ("another agent's token", join_request(), TOKENS["agent_1"]),
        ("own token, another agent's id", join_request("agent_1"), TOKENS["agent_0"]),
    ],
)
def test_step_lane_join_token_abuse(
    tokens: Arena, case: str, req: pb.JoinRequest, token: str
) -> None:
    observe(
        tokens,
        f"step lane join (tokens): {case}",
        Code.UNAUTHENTICATED,
        lambda: lane_join_status(tokens, req, None, token),
    )


def test_garbage_without_token_is_refused_before_parsing(tokens: Arena) -> None:
    def case() -> Any:
        ch = tokens.channel(None)
        try:
            return status_of(lambda: ch.unary_unary("/qmix_edge.v1.Team/Join")(GARBAGE, timeout=5))
        finally:
            ch.close()

    observe(tokens, "garbage bytes on Join without a token", Code.UNAUTHENTICATED, case)


def test_session_hijack_with_another_certificate(mtls: Arena) -> None:
    def case() -> Any:
        s = Session(mtls)
        s.next_request()
        try:
            ch = mtls.channel("agent_1")
            thief = pb_grpc.TeamStub(ch)
            leave = status_of(
                lambda: thief.Leave(pb.LeaveRequest(session_id=s.join.session_id), timeout=5)
            )
            attach = pb.AgentMessage(attach=pb.Attach(session_id=s.join.session_id))
            stream = status_of(lambda: list(thief.Steps(iter([attach]), timeout=5)))
            ch.close()
            assert mtls.c.session_agent(s.join.session_id) == "agent_0"  # untouched
            return leave if leave == stream else f"{leave.name}/{stream.name}"
        finally:
            s.close()

    observe(mtls, "another agent's cert attaches to / ends a session", Code.PERMISSION_DENIED, case)


def test_replayed_session_is_refused(mtls: Arena) -> None:
    def case() -> Any:
        s = Session(mtls)
        s.next_request()
        sid = s.join.session_id
        again = pb.AgentMessage(attach=pb.Attach(session_id=sid)).SerializeToString()
        twice = raw_call(mtls, "Steps", again)
        s.close()
        after = raw_call(mtls, "Steps", again)
        return (
            twice
            if (twice, after) == (Code.ALREADY_EXISTS, Code.NOT_FOUND)
            else f"{twice.name}/{after.name}"
        )

    observe(
        mtls,
        "second stream on a live session, then a replayed ended session",
        Code.ALREADY_EXISTS,
        case,
    )


# ---------------------------------------------------------------- stale and replayed steps
@pytest.mark.parametrize(("carrier", "prefix"), [("stream", ""), ("lane", "step lane: ")])
def test_stale_replayed_and_future_step_replies_are_discarded(
    mtls: Arena, carrier: str, prefix: str
) -> None:
    def case() -> str:
        s = Session(mtls) if carrier == "stream" else LaneSession(mtls)
        try:
            c = mtls.c.counters["agent_0"]
            req = s.next_request()
            s.reply(req.episode_id, req.step, 0)  # the honest answer
            late0 = c.late_replies
            s.reply(req.episode_id, req.step, 1)  # replay of the same step
            s.reply(req.episode_id, req.step + 1000, 1)  # a step from the future
            s.reply(req.episode_id - 1, req.step, 1)  # an old episode
            s.reply(req.episode_id + 5, 0, 1)  # an episode that does not exist yet
            nxt = s.next_request()
            mtls.c.wait_until(lambda _: c.late_replies >= late0 + 4, 10)  # counted on arrival
            assert nxt.previous_action == 0 or nxt.episode_id != req.episode_id
            return f"discarded, {c.late_replies - late0} counted late"
        finally:
            s.close()

    observe(
        mtls,
        f"{prefix}replayed / future / stale-episode step replies (4)",
        "discarded, 4 counted late",
        case,
    )


def test_out_of_range_action_gets_the_fallback(mtls: Arena) -> None:
    def case() -> str:
        s = Session(mtls)
        try:
            c = mtls.c.counters["agent_0"]
            before = c.invalid_actions
            req = s.next_request()
            s.reply(req.episode_id, req.step, 2**31 - 1)
            s.next_request()  # the step was closed and recorded before the next one was sent
            rec = next(
                r
                for r in read_records(mtls.c.record_path)  # type: ignore[arg-type]
                if isinstance(r, Step) and (r.episode_id, r.step) == (req.episode_id, req.step)
            )
            assert rec.fallback == ("agent_0",) and rec.actions[0] == 1
            return f"fallback applied, invalid_actions +{c.invalid_actions - before}"
        finally:
            s.close()

    observe(mtls, "out-of-range action in a reply", "fallback applied, invalid_actions +1", case)


# ------------------------------------------------------------------------- the step lane
def lane_client(arena: Arena, cert: str | None = "agent_0") -> LaneClient:
    """A raw step lane connection (TLS; ``cert``'s client certificate in the mTLS arena)."""
    c = arena.pki.agents[cert] if cert and not arena.tokens else None
    tls = ClientTls(arena.pki.ca, c.cert if c else None, c.key if c else None)
    return LaneClient(
        "127.0.0.1", arena.c.lane_port, tls=tls, max_message_bytes=wire.MAX_MESSAGE_BYTES
    )


def lane_answer(client: LaneClient, timeout: float = 10.0) -> Any:
    """How the coordinator ended a lane: the status code of its Goodbye REFUSED, or a text."""
    client.set_timeout(timeout)
    try:
        while (m := client.recv()) is not None:
            if m.WhichOneof("kind") == "goodbye" and m.goodbye.reason == pb.GOODBYE_REASON_REFUSED:
                return next(c for c in Code if c.value[0] == m.goodbye.status_code)
            if m.WhichOneof("kind") == "join_reply":
                return "admitted"
        return "closed, nothing received"
    except ssl.SSLError as e:
        return f"TLS refused ({e.reason})"
    finally:
        client.close()


def lane_raw(arena: Arena, payload: bytes, cert: str | None = "agent_0") -> Any:
    """Send raw bytes as the first thing on a fresh lane; the coordinator's answer."""
    client = lane_client(arena, cert)
    client.send_bytes(payload)
    return lane_answer(client)


def lane_join_status(
    arena: Arena, req: pb.JoinRequest, cert: str | None = "agent_0", token: str = ""
) -> Any:
    """Join on a fresh lane (``token`` in the JoinRequest); how the coordinator refused it."""
    with_token = pb.JoinRequest()
    with_token.CopyFrom(req)
    with_token.token = token
    client = lane_client(arena, cert)
    client.send(pb.AgentMessage(join=with_token))
    got = lane_answer(client)  # closing the lane gives an admitted seat back
    if got == "admitted":
        raise AssertionError("the abusive step lane join was admitted")
    return got


def frame(payload: bytes) -> bytes:
    return lane.FRAME_HEADER.pack(len(payload)) + payload


class LaneSession:
    """An abuser holding agent_0's seat over the step lane, driven by hand."""

    def __init__(self, arena: Arena, cert: str = "agent_0") -> None:
        self.arena = arena
        self.channel = arena.channel(cert)
        self.stub = pb_grpc.TeamStub(self.channel)
        self.join = self.stub.Join(
            join_request(step_lane=True), timeout=5, metadata=arena.metadata()
        )
        assert self.join.step_lane_port == arena.c.lane_port != 0
        self.client = lane_client(arena, cert)
        self.client.send(pb.AgentMessage(attach=pb.Attach(session_id=self.join.session_id)))

    def next_request(self) -> pb.StepRequest:
        self.client.set_timeout(10)
        while True:
            m = self.client.recv()
            assert m is not None, "the lane closed"
            if m.WhichOneof("kind") == "step_request":
                return m.step_request

    def reply(self, episode_id: int, step: int, action: int) -> None:
        r = pb.StepReply(episode_id=episode_id, step=step, action=action)
        self.client.send(pb.AgentMessage(step_reply=r))

    def close(self) -> None:
        give_back_seat(self.arena, self.stub, self.join.session_id)
        self.client.close()
        self.channel.close()


@pytest.mark.parametrize(
    ("case", "payload", "code"),
    [
        ("step lane: garbage first frame", frame(GARBAGE), Code.INVALID_ARGUMENT),
        (
            "step lane: first frame a step_reply",
            frame(pb.AgentMessage(step_reply=pb.StepReply(step=1)).SerializeToString()),
            Code.INVALID_ARGUMENT,
        ),
        (
            "step lane: attach to an unknown session",
            frame(pb.AgentMessage(attach=pb.Attach(session_id="f" * 32)).SerializeToString()),
            Code.NOT_FOUND,
        ),
        (
            "step lane: frame header announcing 1 MiB (> 64 KiB)",
            lane.FRAME_HEADER.pack(1 << 20) + b"x" * 100,
            Code.RESOURCE_EXHAUSTED,
        ),
    ],
)
def test_step_lane_refusals(mtls: Arena, case: str, payload: bytes, code: Code) -> None:
    observe(mtls, case, code, lambda: lane_raw(mtls, payload))


def test_step_lane_fuzzed_first_frames(mtls: Arena) -> None:
    # A fuzzed frame may parse as a join: its agent id is not the certificate's (PERMISSION_DENIED)
    allowed = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.PERMISSION_DENIED}
    observe(
        mtls,
        "step lane: 25 fuzzed first frames",
        "/".join(sorted(c.name for c in allowed)),
        lambda: fuzzed(lambda p: lane_raw(mtls, frame(p)), allowed, "the lane"),
    )


def test_step_lane_without_attach_is_closed(mtls: Arena, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane, "ATTACH_TIMEOUT_S", 0.3)
    observe(
        mtls,
        "step lane: connected but never attaches",
        Code.DEADLINE_EXCEEDED,
        lambda: lane_answer(lane_client(mtls)),
    )


@pytest.mark.parametrize(
    ("case", "cert"),
    [
        ("step lane: client without a certificate", None),
        ("step lane: certificate from another CA", "rogue_agent_0"),
    ],
)
def test_step_lane_tls_handshake_refused(mtls: Arena, case: str, cert: str | None) -> None:
    def run() -> str:
        try:
            got = lane_raw(mtls, frame(b""), cert)
        except ssl.SSLError as e:
            got = f"TLS refused ({e.reason})"
        # TLS 1.3 checks the client certificate after the client's handshake is done: the
        # client sees an alert or the connection closing, never a message of the protocol.
        refused = str(got).startswith("TLS refused") or got == "closed, nothing received"
        return "TLS refused" if refused else str(got)

    observe(mtls, case, "TLS refused", run)


def test_step_lane_of_another_agents_session(mtls: Arena) -> None:
    def case() -> Any:
        s = LaneSession(mtls)
        try:
            s.next_request()
            attach = pb.AgentMessage(attach=pb.Attach(session_id=s.join.session_id))
            stolen = lane_raw(mtls, frame(attach.SerializeToString()), cert="agent_1")
            twice = lane_raw(mtls, frame(attach.SerializeToString()))
            s.next_request()  # the rightful lane still steps
            return stolen if twice == Code.ALREADY_EXISTS else f"{stolen}/{twice}"
        finally:
            s.close()

    observe(
        mtls,
        "step lane: another agent's cert attaches to a live session (then a second lane)",
        Code.PERMISSION_DENIED,
        case,
    )


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("step lane (tokens): attach without a token", ""),
        ("step lane (tokens): attach with another agent's token", TOKENS["agent_1"]),
    ],
)
def test_step_lane_token_abuse(tokens: Arena, case: str, token: str) -> None:
    def run() -> Any:
        ch = tokens.channel(None)
        stub = pb_grpc.TeamStub(ch)
        join = stub.Join(join_request(step_lane=True), timeout=5, metadata=tokens.metadata())
        try:
            attach = pb.AgentMessage(attach=pb.Attach(session_id=join.session_id, token=token))
            got = lane_raw(tokens, frame(attach.SerializeToString()), cert=None)
            assert (
                tokens.c.session_agent(join.session_id) is not None
            )  # the seat is still the joiner's
            return got
        finally:
            stub.Leave(pb.LeaveRequest(session_id=join.session_id), metadata=tokens.metadata())
            ch.close()

    observe(tokens, case, Code.UNAUTHENTICATED, run)


def test_step_lane_garbage_after_attach(mtls: Arena) -> None:
    def case() -> Any:
        s = LaneSession(mtls)
        s.next_request()
        before = mtls.c.counters["agent_0"].malformed
        s.client.send_bytes(frame(GARBAGE))
        got = lane_answer(s.client)
        s.close()
        assert mtls.c.counters["agent_0"].malformed == before + 1
        assert mtls.c.session_agent(s.join.session_id) is None
        return got

    observe(mtls, "step lane: garbage frame after attach", Code.INVALID_ARGUMENT, case)


# ------------------------------------------------ bad observations reaching an agent (client)
def _request(obs: pb.Tensor, mask: pb.Tensor | None = None) -> pb.StepRequest:
    req = pb.StepRequest(episode_id=1, step=0, team_step=0)
    req.observation.CopyFrom(obs)
    if mask is not None:
        req.action_mask.CopyFrom(mask)
    return req


def _t(arr: np.ndarray) -> pb.Tensor:
    return wire.encode(arr)


@pytest.mark.parametrize(
    ("case", "req"),
    [
        ("observation NaN", _request(_t(np.array([np.nan, 0, 0], np.float32)))),
        ("observation +inf", _request(_t(np.array([np.inf, 0, 0], np.float32)))),
        ("observation wrong shape", _request(_t(np.zeros((3, 1), np.float32)))),
        ("observation wrong dtype (int64)", _request(_t(np.zeros(3, np.int64)))),
        (
            "observation truncated bytes",
            _request(pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[3], data=b"\0" * 7)),
        ),
        (
            "observation unknown dtype code",
            _request(pb.Tensor(dtype=77, shape=[3], data=b"\0" * 12)),
        ),
        (
            "mask bool byte 7",
            _request(
                _t(np.zeros(3, np.float32)),
                pb.Tensor(dtype=pb.DTYPE_BOOL, shape=[2], data=b"\x07\x01"),
            ),
        ),
        ("mask wrong shape", _request(_t(np.zeros(3, np.float32)), _t(np.ones(5, bool)))),
    ],
)
def test_bad_observations_get_the_fallback_on_the_agent(
    mtls: Arena, case: str, req: pb.StepRequest
) -> None:
    def run() -> str:
        policy = FakePolicy("agent_0", fallback_action=1)
        runner = AgentRunner(policy, "127.0.0.1:1")
        reply = runner.answerer.answer(req)
        assert reply is not None and policy.seen == []  # never reached the policy
        return "fallback" if reply.is_fallback and reply.action == 1 else f"action {reply.action}"

    observe(mtls, f"agent side: {case}", "fallback", run)


# ------------------------------------------------------------------------------- the end
@pytest.mark.parametrize(("lane_only", "how"), [(False, ""), (True, " on the step lane alone")])
def test_honest_agent_0_takes_its_seat_after_all_abuse(
    mtls: Arena, tokens: Arena, lane_only: bool, how: str
) -> None:
    for arena in (mtls, tokens):

        def case(arena: Arena = arena) -> str:
            c = arena.c.counters["agent_0"]
            r = arena.runner("agent_0", lane_only=lane_only)
            t = threading.Thread(target=r.run, daemon=True)
            start = c.decisions
            t.start()
            served = arena.c.wait_until(lambda _: c.decisions >= start + 3 or not t.is_alive(), 20)
            assert served and t.is_alive(), "agent_0 not served"
            f0, before = c.fallbacks, c.decisions
            # Count once a step it answered has closed, and before it leaves: the step in flight
            # when it says Leave rightly gets its fallback.
            served = arena.c.wait_until(lambda _: c.decisions >= before + 3, 20)
            assert served, "agent_0 stopped being served"
            f1 = c.fallbacks
            r.stop()
            t.join(10)
            return "served" if f1 == f0 else "fallbacks"

        observe(arena, f"honest agent_0 joins{how} after the abuse", "served", case)
