"""TLS, mutual TLS and bearer tokens on a real in-process coordinator (port 0, trustme PKI).

An agent can only ever speak as itself: its certificate (CN / SAN URI) or token names its id, and
a Join, attach or Leave for another id is PERMISSION_DENIED; a missing or wrong token is
UNAUTHENTICATED; a client without a (trusted) certificate never completes the handshake.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from runtime_doubles import SHA, FakePolicy, Harness, two_step_team
from trust_pki import Pki, make_pki

from qmix_edge.envs import TwoStepGame
from qmix_edge.runtime import agent as agent_cli
from qmix_edge.runtime import coordinator as coordinator_cli
from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import AgentRunner, Backoff
from qmix_edge.runtime.agent.carriers import LaneExchange, Link, SessionEnd, SessionOutcome
from qmix_edge.runtime.artifact import ArtifactError
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig
from qmix_edge.runtime.coordinator.cli import build_coordinator, parse_args
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.proto.v1 import team_pb2_grpc as pb_grpc
from qmix_edge.runtime.security import (
    ClientTls,
    SecurityConfigError,
    ServerTls,
    cert_agent_id,
    load_tokens,
    token_metadata,
)

TOKENS = {"agent_0": "tok-agent-0-" + "a" * 20, "agent_1": "tok-agent-1-" + "b" * 20}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secure_harness(tmp_path: Path, pki: Pki) -> Any:
    made: list[Harness] = []

    def make(*, mutual: bool = True, tokens: bool = False, **config: Any) -> Harness:
        tls = ServerTls(pki.server_cert, pki.server_key, pki.ca if mutual else None)
        h = Harness(
            Coordinator(
                two_step_team(),
                CoordinatorConfig(**{"team_wait_s": 10.0, **config}),
                env=TwoStepGame(),
                record_path=tmp_path / f"rec{len(made)}.jsonl",
                tls=tls,
                tokens=TOKENS if tokens else None,
            )
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.coordinator.close(grace_s=0.5)


def channel(h: Harness, pki: Pki, cert: str | None = None) -> grpc.Channel:
    c = pki.agents[cert] if cert else None
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=c.key.read_bytes() if c else None,
        certificate_chain=c.cert.read_bytes() if c else None,
    )
    return grpc.secure_channel(h.target, creds)


def join(agent_id: str) -> pb.JoinRequest:
    return pb.JoinRequest(
        protocol_version=wire.PROTOCOL_VERSION,
        agent_id=agent_id,
        artifact_sha256=SHA[agent_id],
        client_name="trust-test",
    )


def client_tls(pki: Pki, agent_id: str | None) -> ClientTls:
    c = pki.agents[agent_id] if agent_id else None
    return ClientTls(pki.ca, c.cert if c else None, c.key if c else None)


def run_team(h: Harness, pki: Pki, *, mutual: bool = True, tokens: bool = False) -> Any:
    """Two honest agents over TLS play the configured episodes; returns the run summary."""
    h.run_in_thread()
    for a in ("agent_0", "agent_1"):
        r = AgentRunner(
            FakePolicy(a),
            h.target,
            watchdog_s=5.0,
            tls=client_tls(pki, a if mutual else None),
            token=TOKENS[a] if tokens else None,
        )
        threading.Thread(target=r.run, daemon=True).start()
    return h.wait(60)


def code_of(fn: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    code: grpc.StatusCode = info.value.code()
    return code


# ------------------------------------------------------------------------------- TLS / mTLS
def test_team_runs_over_tls_and_plain_text_client_is_refused(secure_harness: Any, pki: Pki) -> None:
    h = secure_harness(mutual=False, episodes=2)
    plain = pb_grpc.TeamStub(h.channel())
    assert code_of(lambda: plain.Join(join("agent_0"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    summary = run_team(h, pki, mutual=False)
    assert summary.finished and [e["steps"] for e in summary.episodes] == [2, 2]


def test_team_runs_over_mutual_tls(secure_harness: Any, pki: Pki) -> None:
    summary = run_team(secure_harness(episodes=2), pki)
    assert summary.finished and all(c.fallbacks == 0 for c in summary.counters.values())


@pytest.mark.parametrize(
    ("cert", "agent_id", "code"),
    [
        (None, "agent_0", grpc.StatusCode.UNAVAILABLE),  # no client certificate: no handshake
        ("rogue_agent_0", "agent_0", grpc.StatusCode.UNAVAILABLE),  # CN right, CA wrong
        ("agent_1", "agent_0", grpc.StatusCode.PERMISSION_DENIED),  # another agent's cert
        ("agent_9", "agent_0", grpc.StatusCode.PERMISSION_DENIED),  # a cert of no team member
        ("agent_9", "agent_9", grpc.StatusCode.NOT_FOUND),  # honest about itself, not in team
        ("uri_agent_1", "agent_0", grpc.StatusCode.PERMISSION_DENIED),  # SAN URI names agent_1
    ],
)
def test_mutual_tls_binds_the_certificate_to_the_agent_id(
    secure_harness: Any, pki: Pki, cert: str | None, agent_id: str, code: grpc.StatusCode
) -> None:
    h = secure_harness()
    stub = pb_grpc.TeamStub(channel(h, pki, cert))
    req = join(agent_id) if agent_id in SHA else join("agent_0")
    req.agent_id = agent_id
    assert code_of(lambda: stub.Join(req, timeout=5)) == code
    # the honest agent_0 is still admitted
    assert pb_grpc.TeamStub(channel(h, pki, "agent_0")).Join(join("agent_0"), timeout=5).session_id


def test_san_uri_names_the_agent_over_the_common_name(secure_harness: Any, pki: Pki) -> None:
    h = secure_harness()
    stub = pb_grpc.TeamStub(channel(h, pki, "uri_agent_1"))  # CN device-17, URI qmix-agent:agent_1
    assert stub.Join(join("agent_1"), timeout=5).session_id


def test_another_agents_certificate_cannot_attach_to_or_end_its_session(
    secure_harness: Any, pki: Pki
) -> None:
    h = secure_harness()
    own = pb_grpc.TeamStub(channel(h, pki, "agent_0"))
    session = own.Join(join("agent_0"), timeout=5).session_id
    thief = pb_grpc.TeamStub(channel(h, pki, "agent_1"))
    attach = iter([pb.AgentMessage(attach=pb.Attach(session_id=session))])
    assert code_of(lambda: list(thief.Steps(attach, timeout=5))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    leave = pb.LeaveRequest(session_id=session, reason="hijack")
    assert code_of(lambda: thief.Leave(leave, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
    assert h.coordinator.session_agent(session) == "agent_0"  # still there
    own.Leave(pb.LeaveRequest(session_id=session, reason="done"), timeout=5)
    assert h.coordinator.session_agent(session) is None


# ----------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize(
    ("metadata", "agent_id", "code"),
    [
        ((), "agent_0", grpc.StatusCode.UNAUTHENTICATED),
        (
            token_metadata("agent_0", "wrong-token-xxxxxxxxxxxx"),
            "agent_0",
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (token_metadata("agent_0", TOKENS["agent_1"]), "agent_0", grpc.StatusCode.UNAUTHENTICATED),
        (token_metadata("agent_7", TOKENS["agent_0"]), "agent_0", grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", TOKENS["agent_0"]),), "agent_0", grpc.StatusCode.UNAUTHENTICATED),
        (
            token_metadata("agent_1", TOKENS["agent_1"]),
            "agent_0",
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    ],
    ids=["missing", "wrong", "other-agents-token", "unknown-id", "no-bearer", "speaks-for-other"],
)
def test_tokens_are_checked_and_speak_only_for_their_agent(
    secure_harness: Any, pki: Pki, metadata: Any, agent_id: str, code: grpc.StatusCode
) -> None:
    h = secure_harness(mutual=False, tokens=True)
    stub = pb_grpc.TeamStub(channel(h, pki))
    assert code_of(lambda: stub.Join(join(agent_id), timeout=5, metadata=metadata)) == code
    ok = stub.Join(
        join("agent_0"), timeout=5, metadata=token_metadata("agent_0", TOKENS["agent_0"])
    )
    assert ok.session_id


def test_token_required_on_the_step_stream_too(secure_harness: Any, pki: Pki) -> None:
    h = secure_harness(mutual=False, tokens=True)
    stub = pb_grpc.TeamStub(channel(h, pki))
    md = token_metadata("agent_0", TOKENS["agent_0"])
    session = stub.Join(join("agent_0"), timeout=5, metadata=md).session_id
    attach = [pb.AgentMessage(attach=pb.Attach(session_id=session))]
    assert code_of(lambda: list(stub.Steps(iter(attach), timeout=5))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    other = token_metadata("agent_1", TOKENS["agent_1"])
    assert code_of(lambda: list(stub.Steps(iter(attach), timeout=5, metadata=other))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_health_is_open_without_a_token(secure_harness: Any, pki: Pki) -> None:
    h = secure_harness(mutual=False, tokens=True)
    health = health_pb2_grpc.HealthStub(channel(h, pki))
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_team_runs_with_mutual_tls_and_tokens(secure_harness: Any, pki: Pki) -> None:
    summary = run_team(secure_harness(tokens=True, episodes=2), pki, tokens=True)
    assert summary.finished and len(summary.episodes) == 2


def test_certificate_and_token_naming_different_agents_is_denied(
    secure_harness: Any, pki: Pki
) -> None:
    h = secure_harness(tokens=True)
    stub = pb_grpc.TeamStub(channel(h, pki, "agent_0"))
    md = token_metadata("agent_1", TOKENS["agent_1"])
    assert code_of(lambda: stub.Join(join("agent_1"), timeout=5, metadata=md)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_tokens_must_cover_exactly_the_team(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match=r"agents without a token \['agent_1'\]"):
        Coordinator(
            two_step_team(), CoordinatorConfig(), env=TwoStepGame(), tokens={"agent_0": "x" * 20}
        )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not JSON"),
        ('["a"]', "JSON object mapping"),
        ('{"agent_0": "short"}', "shorter than 16"),
        (
            '{"agent_0": "same-token-0123456789", "agent_1": "same-token-0123456789"}',
            "share a token",
        ),
    ],
)
def test_bad_tokens_files_are_refused(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "tokens.json"
    p.write_text(content)
    with pytest.raises(SecurityConfigError, match=match):
        load_tokens(p)


def test_cert_identity_prefers_the_san_uri() -> None:
    assert cert_agent_id({"x509_common_name": [b"agent_0"]}) == "agent_0"
    ctx = {
        "x509_common_name": [b"device-17"],
        "x509_subject_alternative_name": [b"device17.example", b"qmix-agent:agent_1"],
    }
    assert cert_agent_id(ctx) == "agent_1"
    assert cert_agent_id({"transport_security_type": [b"ssl"]}) is None


# ------------------------------------------------------------------------------------- CLIs
@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--host", "0.0.0.0"], "not loopback"),
        (["--host", "10.1.2.3"], "--allow-insecure"),
        (["--tls-cert", "c.pem"], "both --tls-cert and --tls-key"),
        (["--tls-client-ca", "ca.pem"], "needs --tls-cert"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot read"),
    ],
)
def test_coordinator_cli_security_errors(argv: list[str], match: str) -> None:
    argv = ["--artifacts", "/nonexistent", *argv]
    assert coordinator_cli.main(argv) == 2
    with pytest.raises(SecurityConfigError, match=re.escape(match)):
        build_coordinator(parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--coordinator", "10.0.0.2:50051"], "not loopback"),
        (["--coordinator", "ground:50051"], "--tls-ca"),
        (["--step-lane-address", "10.0.0.2:50052"], "not loopback"),
        (["--coordinator", "127.0.0.1:1", "--step-lane-address", "ground:2"], "--tls-ca"),
        (["--step-lane-address", "127.0.0.1:2", "--no-step-lane"], "contradict each other"),
        ([], "give --coordinator HOST:PORT"),
        (["--coordinator", "127.0.0.1:1", "--tls-cert", "a.pem"], "needs --tls-ca"),
        (["--coordinator", "127.0.0.1:1", "--token", "x", "--token-file", "f"], "not both"),
        (["--coordinator", "127.0.0.1:1", "--token-file", "/nonexistent"], "cannot read"),
        (["--coordinator", "127.0.0.1:1", "--tls-ca", "/nonexistent.pem"], "cannot read"),
        (["--step-lane-address", "127.0.0.1:2", "--tls-ca", "/nonexistent.pem"], "cannot read"),
    ],
)
def test_agent_cli_security_errors(
    argv: list[str],
    match: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with caplog.at_level(logging.ERROR):
        assert agent_cli.main(["--artifacts", "/nonexistent", "--agent", "agent_0", *argv]) == 2
    # flag combinations are refused by the parser (stderr), files and addresses once read (log)
    assert match in caplog.text + capsys.readouterr().err


def _unusable_tls_files(pki: Pki, tmp_path: Path) -> dict[str, Path]:
    """TLS files that exist and read fine, but are not usable: not PEM, or a key of another."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {"garbage": garbage, "other_key": pki.agents["agent_1"].key}


@pytest.mark.parametrize(
    ("case", "files"),
    [
        (
            "certificate not PEM",
            lambda f, p: ["--tls-cert", f["garbage"], "--tls-key", p.server_key],
        ),
        ("key not PEM", lambda f, p: ["--tls-cert", p.server_cert, "--tls-key", f["garbage"]]),
        ("another key", lambda f, p: ["--tls-cert", p.server_cert, "--tls-key", f["other_key"]]),
        (
            "client CA not PEM",
            lambda f, p: [
                *("--tls-cert", p.server_cert, "--tls-key", p.server_key),
                *("--tls-client-ca", f["garbage"]),
            ],
        ),
    ],
)
def test_coordinator_refuses_unusable_tls_files_at_start_up(
    case: str, files: Any, pki: Pki, tmp_path: Path
) -> None:
    """gRPC finds bad TLS material only when it binds, and then says the port is in use (exit 1):
    the files are checked first, and the error names them (exit 2, a config error)."""
    argv = ["--artifacts", "/nonexistent"]
    argv += [str(a) for a in files(_unusable_tls_files(pki, tmp_path), pki)]
    assert coordinator_cli.main(argv) == 2, case
    with pytest.raises(SecurityConfigError, match="cannot be used") as refused:
        build_coordinator(parse_args(argv))
    assert "port is in use" not in str(refused.value)


@pytest.mark.parametrize(
    ("case", "files"),
    [
        ("CA not PEM", lambda f, p: ["--tls-ca", f["garbage"]]),
        (
            "another agent's key",
            lambda f, p: [
                *("--tls-ca", p.ca, "--tls-cert", p.agents["agent_0"].cert),
                *("--tls-key", f["other_key"]),
            ],
        ),
    ],
)
@pytest.mark.parametrize("dial", ["--coordinator", "--step-lane-address"])
def test_agent_refuses_unusable_tls_files_at_start_up(
    case: str, files: Any, dial: str, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unusable file would fail every handshake and the agent would retry forever: it is a
    config error at start-up instead (exit 2), naming the file."""
    argv = [str(a) for a in files(_unusable_tls_files(pki, tmp_path), pki)]
    with caplog.at_level(logging.ERROR):
        code = agent_cli.main(
            ["--artifacts", "/nonexistent", "--agent", "agent_0", dial, "127.0.0.1:2", *argv]
        )
    assert code == 2, case
    assert "cannot be used" in caplog.text and "/nonexistent" not in caplog.text


def test_unusable_server_tls_fails_the_library_start_clearly(pki: Pki, tmp_path: Path) -> None:
    garbage = _unusable_tls_files(pki, tmp_path)["garbage"]
    coordinator = Coordinator(
        two_step_team(),
        CoordinatorConfig(team_wait_s=1.0),
        env=TwoStepGame(),
        tls=ServerTls(garbage, pki.server_key),
    )
    try:
        with pytest.raises(
            SecurityConfigError, match=r"--tls-cert .*garbage\.pem.* cannot be used"
        ):
            coordinator.start("127.0.0.1:0")
    finally:
        coordinator.close()


def test_tls_files_spoilt_after_start_up_are_retried_not_fatal(pki: Pki, tmp_path: Path) -> None:
    """The CLI checks the files at start-up; if they are replaced by something unusable later
    (a certificate rotation half done), dialling the lane gives that reason and the agent retries
    as for an unreachable lane, never raising out of its reconnect loop."""
    import socket

    garbage = _unusable_tls_files(pki, tmp_path)["garbage"]
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        runner = AgentRunner(
            FakePolicy("agent_0"),
            None,
            step_lane_address=f"127.0.0.1:{port}",
            tls=ClientTls(garbage),
            backoff=Backoff(initial_s=0.05, max_s=0.05),
            give_up_s=0.3,
        )
        exchange = LaneExchange(runner, Link("agent_0", tls=ClientTls(garbage)))
        outcome = exchange.open("127.0.0.1", port)
        assert isinstance(outcome, SessionOutcome) and outcome.end is SessionEnd.FAILED
        assert outcome.detail.startswith("step lane TLS files unusable now")
        assert "cannot be used" in outcome.detail
        assert runner.run() == 1  # gave up after give_up_s, never joined, never raised
    assert runner.stats.sessions == 0


def test_plain_text_off_loopback_is_allowed_only_when_asked() -> None:
    # --allow-insecure passes the transport check; the bogus artifact is the next error.
    argv = ["--artifacts", "/nonexistent", "--host", "0.0.0.0", "--allow-insecure"]
    assert coordinator_cli.main(argv) == 2
    with pytest.raises(ArtifactError):
        build_coordinator(parse_args(argv))


def test_tokens_file_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps(TOKENS))
    assert load_tokens(p) == TOKENS


def test_a_lane_only_agent_checks_its_tls_files_without_loading_grpc(pki: Pki) -> None:
    """The agent reads its TLS files at start-up (a config error, not a runtime one); on the step
    lane alone that must not load gRPC, which the lane never uses (checked in a fresh interpreter)."""
    import subprocess
    import sys

    c = pki.agents["agent_0"]
    argv = ["--artifacts", "a", "--agent", "agent_0", "--step-lane-address", "127.0.0.1:2"]
    argv += ["--tls-ca", str(pki.ca), "--tls-cert", str(c.cert), "--tls-key", str(c.key)]
    code = (
        "import sys\n"
        "from qmix_edge.runtime.agent import build_parser, client_security\n"
        f"tls, _ = client_security(build_parser().parse_args({argv!r}))\n"
        "assert tls is not None and tls.cert is not None\n"
        "sys.exit('grpc loaded' if 'grpc' in sys.modules else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_agent_modules_do_not_load_cryptography_without_a_public_key() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import qmix_edge.runtime.agent, qmix_edge.runtime.artifact, qmix_edge.runtime.policy\n"
        "import qmix_edge.runtime.security\n"
        "sys.exit(any(m.split('.')[0] == 'cryptography' for m in sys.modules))\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
