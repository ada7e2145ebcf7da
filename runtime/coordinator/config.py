"""What one ``qmix-coordinator`` run is told: the one declaration its flags, its ``--help``, the
`Coordinator` and qmix-eval's child command lines are all built from (`qmix_edge.common.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qmix_edge.common.settings import LogLevel, check_log_level, log_level_setting, setting

from .. import wire

Mode = Literal["simulation", "field", "mission"]
TeamPolicy = Literal["abort_episode", "continue_degraded"]
MODES: tuple[str, ...] = ("simulation", "field", "mission")
TEAM_POLICIES: tuple[str, ...] = ("abort_episode", "continue_degraded")

STEP_DEADLINE_MS = 500
"""The step deadline both ``qmix-coordinator`` and ``qmix-eval`` use unless told otherwise: long
enough for a loaded machine's agent process to be scheduled, short enough that a missing agent
costs a team step half a second (its lease then declares it dead)."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INCOMPLETE_TEAM = 0, 1, 2, 3
"""qmix-coordinator's exit codes: success; runtime failure (the run could not go on, e.g. the
environment failed `ENV_ERROR_LIMIT` times in a row); usage or configuration error; the run ended
but a seat was never filled or no agent ever decided (the summary names who never joined)."""


GROUPS = {
    "team": "the team and its run",
    "clock": "the step clock",
    "net": "addresses and ports",
    "trust": "trust (TLS, mutual TLS, tokens, signatures)",
}


def step_lane_port(grpc_port: int, given: int | None) -> int:
    """The step lane's port: ``given``, else the gRPC port + 1 (a known port for agents that dial
    the lane alone), else any free port when the gRPC port is any free port (0)."""
    if given is not None:
        return given
    return grpc_port + 1 if 0 < grpc_port < 65535 else 0


@dataclass(frozen=True)
class CoordinatorConfig:
    """How the coordinator serves and runs one team (every field is a ``qmix-coordinator`` flag)."""

    artifacts: str = setting(
        "", "Artifact directory (manifest.json) of the team.", required=True, group="team"
    )
    mode: Mode = setting(
        "simulation",
        "simulation: the coordinator owns the environment and sends each agent its observation; "
        "field: lockstep in the field: agents read their own sensors when the coordinator ticks; "
        "mission: every agent runs its own loop (qmix-agent --rate-hz) and the coordinator is "
        "mission control, off the decision path: it starts and ends episodes for the whole team "
        "at agreed times, collects telemetry and the agents' records, and rolls out signed "
        "policies (qmix-deploy).",
        group="team",
    )
    env: str | None = setting(
        None, "Simulation env id; none = the env the manifest was trained on.", group="team"
    )
    episodes: int = setting(1, "Episodes to run; 0 = until stopped.", group="team")
    seed: int = setting(0, "Episode i resets the environment with seed + i.", group="team")
    episode_limit: int | None = setting(
        None,
        "Steps per episode; field and mission modes require it, simulation defaults to the "
        "env's limit.",
        group="team",
    )
    team_policy: TeamPolicy = setting(
        "abort_episode",
        "What an agent silent for --lease-steps steps does to the episode: abort it, or go on "
        "with the legal-action rule in its seat.",
        group="team",
    )
    team_wait_s: float = setting(
        30.0,
        "Before each episode, wait up to this long for every seat to be filled, then start with "
        "whoever is there (empty seats get the legal-action rule).",
        group="team",
    )
    record: str | None = setting(
        None, "Append the run record (JSON lines) to this file.", group="team"
    )
    resume: bool = setting(
        False,
        "Continue the run recorded in --record (skip the episodes it completed).",
        group="team",
    )
    stop_after_steps: int | None = setting(
        None, "Stop gracefully (as on SIGTERM) after this many team steps.", group="team"
    )

    step_deadline_ms: int = setting(
        STEP_DEADLINE_MS,
        "How long one step waits for the agents' replies, in ms; a reply later than this is "
        "replaced by the legal-action rule.",
        group="clock",
    )
    lease_steps: int = setting(
        5, "Consecutive missed steps after which an agent is declared dead.", group="clock"
    )
    step_period_ms: int = setting(
        0,
        "Time between step starts in ms; required in field mode, 0 = as fast as possible. "
        "Mission mode: the agents' control period (1000 / their --rate-hz); an episode lasts "
        "--episode-limit periods.",
        group="clock",
    )
    start_lead_ms: int = setting(
        500,
        "Mission mode: how far ahead every start and end is announced, so the whole team "
        "receives it before the agreed instant (more than the link's worst delay).",
        group="clock",
    )
    attach_timeout_s: float = setting(
        10.0,
        "A joined session that has not opened its step stream after this long may be replaced.",
        group="clock",
    )

    host: str = setting("127.0.0.1", "Address to bind.", group="net")
    port: int = setting(50051, "gRPC port; 0 = any free port.", group="net")
    port_file: str | None = setting(None, "Write the bound gRPC port to this file.", group="net")
    step_lane: bool = setting(
        True,
        "Also serve the step lane (Join, steps and Leave as TCP frames, TLS like the gRPC port) "
        "and offer it to agents; --no-step-lane: every agent steps on the gRPC Steps stream.",
        group="net",
    )
    step_lane_port: int | None = setting(
        None,
        "TCP port of the step lane; 0 = any free port; none = --port + 1 (any free port with "
        "--port 0). Agents joining over gRPC are told it.",
        group="net",
    )
    step_lane_port_file: str | None = setting(
        None, "Write the step lane's bound port to this file.", group="net"
    )
    max_message_bytes: int = setting(
        wire.MAX_MESSAGE_BYTES,
        "Receive limit of one message, on gRPC and on the step lane, in bytes.",
        group="net",
    )

    public_key: str | None = setting(
        None, "Ed25519 public key (PEM) the manifest's signature must verify with.", group="trust"
    )
    tls_cert: str | None = setting(
        None, "Serve TLS with this certificate (PEM); needs --tls-key.", group="trust"
    )
    tls_key: str | None = setting(None, "Private key of --tls-cert (PEM).", group="trust")
    tls_client_ca: str | None = setting(
        None,
        "Mutual TLS: require agent certificates signed by this CA; a certificate names its "
        "agent id (SAN URI qmix-agent:<id>, else CN) and may only speak as it.",
        group="trust",
    )
    tokens: str | None = setting(
        None,
        "JSON file {agent_id: token}: every call needs 'authorization: Bearer <token>' of the "
        "agent it speaks for.",
        group="trust",
    )
    operator_token_file: str | None = setting(
        None,
        "Mission mode: file holding the token qmix-deploy must present to roll out a policy; "
        "none = rollouts only from this host (loopback).",
        group="trust",
    )
    allow_insecure: bool = setting(
        False,
        "Allow plain text on a non-loopback --host (a trusted network only).",
        group="trust",
    )
    log_level: LogLevel = log_level_setting("INFO")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; found {self.mode!r}")
        if self.team_policy not in TEAM_POLICIES:
            raise ValueError(
                f"team_policy must be one of {TEAM_POLICIES}; found {self.team_policy!r}"
            )
        if self.episodes < 0:
            raise ValueError(f"episodes must be >= 0 (0 = until stopped); found {self.episodes}")
        if not 1 <= self.step_deadline_ms <= 600_000:
            raise ValueError(
                f"step_deadline_ms must be in [1, 600000]; found {self.step_deadline_ms}"
            )
        if self.lease_steps < 1:
            raise ValueError(f"lease_steps must be >= 1; found {self.lease_steps}")
        if self.step_period_ms < 0:
            raise ValueError(f"step_period_ms must be >= 0; found {self.step_period_ms}")
        if self.mode in ("field", "mission") and (
            self.step_period_ms <= 0 or not self.episode_limit
        ):
            raise ValueError(
                f"{self.mode} mode needs a step period and an episode length: set "
                f"step_period_ms > 0 and episode_limit > 0 (found {self.step_period_ms} and "
                f"{self.episode_limit})"
            )
        if self.start_lead_ms < 0:
            raise ValueError(f"start_lead_ms must be >= 0; found {self.start_lead_ms}")
        if self.episode_limit is not None and self.episode_limit < 1:
            raise ValueError(f"episode_limit must be >= 1; found {self.episode_limit}")
        for name in ("port", "step_lane_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ValueError(f"{name} must be in [0, 65535] (0 = any free port); found {value}")
        check_log_level(self.log_level)

    @property
    def address(self) -> str:
        """``host:port`` to bind the gRPC server to."""
        return f"{self.host}:{self.port}"
