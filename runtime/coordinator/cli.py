"""qmix-coordinator: the command line. Parses the flags (`CoordinatorConfig`), checks the TLS
files, tokens, artifact and environment (a problem there is a usage or configuration error: one
line, exit 2), serves the team until the run ends or SIGTERM/SIGINT asks for a graceful stop, and
logs the closing summary. A bug is not hidden: it ends the command with its traceback (exit 1).

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from qmix_edge.common import atomic, settings
from qmix_edge.envs.errors import EnvError

from ..artifact import ArtifactError
from ..errors import RuntimeFailure, TeamMismatchError
from ..security import (
    SecurityConfigError,
    ServerTls,
    is_loopback,
    load_tokens,
    read_token_file,
    require_secure_or_loopback,
)
from .clock import ENV_ERROR_LIMIT
from .config import EXIT_FAILURE, EXIT_INCOMPLETE_TEAM, EXIT_OK, EXIT_USAGE, CoordinatorConfig
from .config import GROUPS as CONFIG_GROUPS
from .mission_run import MissionSummary
from .server import Coordinator
from .summary import summary_lines
from .team import TeamSpec, make_team_env

log = logging.getLogger(__name__)

DESCRIPTION = f"""\
Serve one team: agents (qmix-agent) dial in, join with their artifact hash, and the
coordinator keeps them in step. Simulation mode runs the environment here and sends
each agent its own observation; field mode paces a real team and records reports.
Mission mode is mission control for agents on their own clocks (qmix-agent --rate-hz):
it starts and ends episodes for the whole team at agreed times, collects telemetry and
the agents' own records, and rolls out signed policies (qmix-deploy); qmix-mission
pauses, resumes or ends an episode and shows the team.

examples:
  qmix-coordinator --artifacts artifacts/run1 --episodes 10 --port 50051 \\
      --record runs/run1/episodes.jsonl
  qmix-coordinator --artifacts artifacts/run1 --mode mission --episode-limit 25 \\
      --step-period-ms 100 --episodes 0 --record mission.jsonl

exit status: 0 the run finished (or was stopped) with its whole team; 1 runtime
failure (e.g. the environment raised in {ENV_ERROR_LIMIT} consecutive episodes); 2 usage or
configuration error; {EXIT_INCOMPLETE_TEAM} the run ended but a seat was never filled or no agent
ever decided (the last lines name the agents that never joined).
"""

CONFIG_ERRORS = (RuntimeFailure, ArtifactError, EnvError)
"""What the user fixes in flags, files, artifact or environment (exit 2, one line)."""


def build_parser() -> argparse.ArgumentParser:
    """qmix-coordinator's flags: the fields of `CoordinatorConfig`."""
    return settings.build_parser(
        CoordinatorConfig, "qmix-coordinator", DESCRIPTION, titles=CONFIG_GROUPS
    )


def parse_args(argv: Sequence[str] | None = None) -> CoordinatorConfig:
    """The config ``argv`` asks for; `SystemExit` (2) on a usage error, (0) after ``--help``."""
    config, _ = settings.parse(CoordinatorConfig, build_parser(), argv)
    return config


def server_security(
    args: CoordinatorConfig,
) -> tuple[ServerTls | None, dict[str, str] | None]:
    """The TLS material and tokens the flags name; `SecurityConfigError` when inconsistent."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise SecurityConfigError("TLS needs both --tls-cert and --tls-key (found only one)")
    if args.tls_client_ca and not args.tls_cert:
        raise SecurityConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
    tls = (
        ServerTls(
            Path(args.tls_cert),
            Path(args.tls_key),
            Path(args.tls_client_ca) if args.tls_client_ca else None,
        )
        if args.tls_cert and args.tls_key
        else None
    )
    if tls is not None:
        tls.credentials()  # read and check the files now: a config error, not a runtime one
    require_secure_or_loopback(args.host, tls is not None, args.allow_insecure, "--tls-cert")
    tokens = load_tokens(args.tokens) if args.tokens else None
    if not is_loopback(args.host) and not (tls is not None and tls.mutual) and tokens is None:
        log.warning(
            "serving %s without agent identity (no --tls-client-ca, no --tokens): any client "
            "that reaches this port can join as any agent",
            args.host,
        )
    return tls, tokens


def build_coordinator(config: CoordinatorConfig) -> Coordinator:
    """The coordinator the flags describe: TLS and tokens checked, the artifact loaded and
    verified, the simulation environment made and matched against it."""
    tls, tokens = server_security(config)
    team = TeamSpec.from_artifacts(config.artifacts, public_key=config.public_key)
    env = None
    if config.mode == "simulation":
        try:
            env = make_team_env(team, config.env, config.episode_limit)
        except TeamMismatchError as e:
            _refuse_an_edited_manifest(config.artifacts, team, config.public_key, e)
            raise
    operator_token = (
        read_token_file(config.operator_token_file, "--operator-token-file")
        if config.operator_token_file
        else None
    )
    return Coordinator(
        team,
        config,
        env=env,
        record_path=config.record,
        tls=tls,
        tokens=tokens,
        operator_token=operator_token,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        coordinator = build_coordinator(config)
    except CONFIG_ERRORS as e:  # config, artifact and env errors are the user's to fix
        log.error("%s: %s", type(e).__name__, e)
        return EXIT_USAGE
    try:
        port = coordinator.start(config.address)
    except RuntimeFailure as e:
        log.error("%s", e)
        coordinator.close()
        return EXIT_FAILURE
    if config.port_file:
        atomic.write_text(Path(config.port_file), f"{port}\n")
    if config.step_lane_port_file and coordinator.lane_port:
        atomic.write_text(Path(config.step_lane_port_file), f"{coordinator.lane_port}\n")
    stop_handler = _install_signal_handlers(coordinator.request_stop)
    try:
        summary = coordinator.run()
    finally:
        coordinator.close()
        stop_handler()
    lines = (
        summary.lines(config.record)
        if isinstance(summary, MissionSummary)
        else summary_lines(summary, config.record)
    )
    for line in lines:
        log.log(logging.INFO if summary.exit_status == EXIT_OK else logging.ERROR, "%s", line)
    return summary.exit_status


def _refuse_an_edited_manifest(
    artifacts: str, team: TeamSpec, public_key: Any, cause: Exception
) -> None:
    """When the env disagrees with manifest.json, the manifest may be what is wrong: load each
    agent's graph (hash, the mirror of the manifest it was exported with) so an edited manifest
    is named as such, instead of advice to change the env."""
    from ..policy import AgentPolicy

    for agent in team.agents:
        try:
            AgentPolicy.load(artifacts, agent.agent_id, public_key=public_key)
        except ArtifactError as e:
            raise e from cause


def _install_signal_handlers(on_stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM/SIGINT -> graceful stop; returns a function restoring the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d received", signum)
        on_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
