"""qmix-agent: one agent of the team on its own device (the command).

Reads `AgentConfig` from the command line, checks the trust material (`client_security`), loads
the agent's verified ONNX policy (`load_policy`: artifact hash and signature checked before any
onnxruntime session) and the field plug-ins, then runs an `AgentRunner` until the coordinator
finishes the run (exit 0), gives up or is stopped (1), or refuses this agent (2). SIGTERM and
SIGINT make it leave its seat and exit.

Errors: a bad flag or a bad config value is a usage error (exit 2, argparse's message); an
artifact, trust or plug-in problem is a config error (exit 2, one line); anything else is a bug
and ends with its traceback (exit 1).

Base install only: must not import torch (nor qmix_edge.train / qmix_edge.export).
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from qmix_edge.common import settings

from ..errors import RuntimeFailure
from ..field import load_callable
from ..security import (
    ClientTls,
    SecurityConfigError,
    host_of,
    read_token_file,
    require_secure_or_loopback,
)
from .answer import PolicyLike, StepAnswerer
from .config import GROUPS as CONFIG_GROUPS
from .config import AgentConfig
from .runner import AgentRunner, AnswererFactory, Backoff

log = logging.getLogger(__name__)

DESCRIPTION = """\
Run one agent of a team on this device: load its ONNX graph from the artifact,
dial the coordinator, and act greedily from this device's own inputs. Reconnects
with backoff and holds the fallback action while the coordinator is away.

Give the coordinator's gRPC port (--coordinator), or its step lane alone
(--step-lane-address: Join, steps and Leave on the lane, and no gRPC in this process).

example:
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator 10.0.0.2:50051
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --step-lane-address 10.0.0.2:50052
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator ground:50051 \\
      --sensor examples.field_plugin:read_sensors --actuator examples.field_plugin:actuate
"""


def build_parser() -> argparse.ArgumentParser:
    """qmix-agent's flags: exactly the fields of `AgentConfig`."""
    return settings.build_parser(AgentConfig, "qmix-agent", DESCRIPTION, titles=CONFIG_GROUPS)


def client_security(args: AgentConfig) -> tuple[ClientTls | None, str | None]:
    """The TLS material and token the flags name; `SecurityConfigError` when inconsistent."""
    if args.tls_cert and not args.tls_ca:
        raise SecurityConfigError("--tls-cert (mutual TLS) needs --tls-ca as well")
    tls = (
        ClientTls(
            Path(args.tls_ca),
            Path(args.tls_cert) if args.tls_cert else None,
            Path(args.tls_key) if args.tls_key else None,
            args.tls_server_name,
        )
        if args.tls_ca
        else None
    )
    if tls is not None:
        # Read and check the files now: a config error, not a runtime one (an unusable file would
        # otherwise only fail each handshake, and the agent would retry forever). Neither step
        # needs grpc, so a lane-only agent over TLS stays without gRPC (10 to 16 MiB less
        # resident memory).
        tls.read_pem()
        tls.ssl_context()
    if args.token and args.token_file:
        raise SecurityConfigError("give --token or --token-file, not both")
    token = read_token_file(args.token_file) if args.token_file else args.token
    for address in (args.coordinator, args.step_lane_address):
        if address:
            require_secure_or_loopback(
                host_of(address), tls is not None, args.allow_insecure, "--tls-ca"
            )
    return tls, token


def load_policy(artifacts: str, agent_id: str, public_key: str | None) -> PolicyLike:
    """Load the agent's verified ONNX policy (artifact hash/signature checked before the session)."""
    from ..policy import AgentPolicy

    policy: PolicyLike = AgentPolicy.load(artifacts, agent_id, public_key=public_key)
    return policy


def main(argv: Sequence[str] | None = None, *, answerer: AnswererFactory = StepAnswerer) -> int:
    """qmix-agent. ``answerer``: what answers each step (the fault-injecting agent of qmix-eval
    passes its own; the command itself always uses `StepAnswerer`)."""
    try:
        args, _ = settings.parse(AgentConfig, build_parser(), argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s {args.agent} %(name)s: %(message)s",
    )
    if args.rate_hz is not None:  # the field loop on this device's own clock
        from .field_main import FieldAgent, run_field

        try:
            tls, token = client_security(args)
            agent = FieldAgent(args, tls, token)
        except RuntimeFailure as e:  # trust, artifact, store and plug-in problems
            log.error("%s: %s", type(e).__name__, e)
            return 2
        return run_field(agent)
    try:
        tls, token = client_security(args)
        policy = load_policy(args.artifacts, args.agent, args.public_key)
        sensor = load_callable(args.sensor) if args.sensor else None
        actuator = load_callable(args.actuator) if args.actuator else None
    except RuntimeFailure as e:  # trust, artifact and plug-in problems are the user's to fix
        log.error("%s: %s", type(e).__name__, e)
        return 2
    runner = AgentRunner(
        policy,
        args.coordinator,
        sensor=sensor,
        actuator=actuator,
        backoff=Backoff(max_s=args.backoff_max_s),
        watchdog_s=args.watchdog_s,
        give_up_s=args.give_up_s,
        tls=tls,
        token=token,
        step_lane=args.step_lane,
        step_lane_address=args.step_lane_address,
        answerer=answerer,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    code = runner.run()
    st = runner.stats
    log.info(
        "agent %s exits %d: %d sessions, %d episodes, %d steps answered, %d bad requests",
        args.agent,
        code,
        st.sessions,
        st.episodes,
        st.steps,
        st.bad_requests,
    )
    return code
