"""What one ``qmix-agent`` is told: the one declaration its flags, its ``--help`` and qmix-eval's
child command lines are built from (`qmix_edge.common.settings`). Loads neither grpc nor torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qmix_edge.common.settings import LogLevel, check_log_level, log_level_setting, setting

from ..lane import parse_address

LossPolicy = Literal["continue", "hold", "stop"]

GROUPS = {
    "who": "this agent and where its team is",
    "field": "field mode (this device's sensors and actuators)",
    "link": "the link to the coordinator",
    "trust": "trust (TLS, mutual TLS, tokens, signatures)",
}


@dataclass(frozen=True)
class AgentConfig:
    """How one agent process runs (every field is a ``qmix-agent`` flag)."""

    artifacts: str = setting(
        "",
        "Artifact directory (manifest.json) holding this agent's graph.",
        required=True,
        group="who",
    )
    agent: str = setting(
        "", "This agent's id in the manifest, e.g. agent_0.", required=True, group="who"
    )
    coordinator: str | None = setting(
        None,
        "HOST:PORT of qmix-coordinator's gRPC port (Join and Leave over gRPC; with --rate-hz: "
        "mission control's).",
        group="who",
    )
    step_lane_address: str | None = setting(
        None,
        "HOST:PORT of the coordinator's step lane (its --port + 1 by default). Alone: join, step "
        "and leave on the lane, without gRPC. With --coordinator: dial the lane there instead of "
        "the port the Join names (a port forward or proxy in between).",
        group="who",
    )
    step_lane: bool = setting(
        True,
        "Step on the coordinator's step lane when it offers one; --no-step-lane: always step on "
        "the gRPC Steps stream.",
        group="link",
    )
    watchdog_s: float = setting(
        1.0,
        "Hold the fallback action (the legal-action rule) when the coordinator has been silent "
        "this long, in seconds.",
        group="link",
    )
    give_up_s: float = setting(
        0.0, "Exit after the coordinator has been unreachable this long; 0 = never.", group="link"
    )
    backoff_max_s: float = setting(
        2.0, "Largest delay between reconnect attempts, in seconds.", group="link"
    )
    sensor: str | None = setting(
        None, "Field mode: module:callable giving this device's observations.", group="field"
    )
    actuator: str | None = setting(
        None, "Field mode: module:callable taking this device's actions.", group="field"
    )
    public_key: str | None = setting(
        None, "Ed25519 public key (PEM) the manifest's signature must verify with.", group="trust"
    )
    tls_ca: str | None = setting(
        None, "Dial TLS; the CA of the coordinator's certificate.", group="trust"
    )
    tls_cert: str | None = setting(
        None,
        "Mutual TLS: this agent's certificate (CN or SAN URI qmix-agent:<id> = --agent).",
        group="trust",
    )
    tls_key: str | None = setting(None, "Private key of --tls-cert.", group="trust")
    tls_server_name: str | None = setting(
        None, "Name the coordinator's certificate must carry.", group="trust"
    )
    token: str | None = setting(
        None, "Bearer token (prefer --token-file: ps shows this).", group="trust"
    )
    token_file: str | None = setting(None, "File holding this agent's bearer token.", group="trust")
    allow_insecure: bool = setting(
        False,
        "Allow plain text to a non-loopback coordinator (a trusted network only).",
        group="trust",
    )
    rate_hz: float | None = setting(
        None,
        "Field mode on this device's own clock: run the control loop (sensor, safety mask, "
        "policy, actuator) at this many ticks per second, with no coordinator on the decision "
        "path. With --coordinator it links to mission control (qmix-coordinator --mode mission: "
        "agreed episode starts, telemetry, record upload, rollouts); without, it runs episodes "
        "back to back on its own. none = lockstep: decide when the coordinator asks.",
        group="field",
    )
    on_coordinator_loss: LossPolicy = setting(
        "continue",
        "With --rate-hz: what losing mission control does. continue: keep running the policy "
        "(the decentralized default); hold: apply the fallback action (the legal-action rule) "
        "every tick; stop: end the loop and exit.",
        group="field",
    )
    loss_after_s: float = setting(
        1.0,
        "With --rate-hz: mission control counts as lost after this long unheard.",
        group="field",
    )
    stale_after_s: float = setting(
        0.5,
        "With --rate-hz: a sensor reading older than this (by its time stamp) gives the fallback.",
        group="field",
    )
    safety: str | None = setting(
        None,
        "With --rate-hz: module:callable returning a bool mask of the actions local sensors "
        "allow (geofence, obstacle), ANDed with the env mask; nothing allowed = the fallback rule.",
        group="field",
    )
    episode_limit: int | None = setting(
        None,
        "With --rate-hz: steps after which this device ends an episode on its own; none = mission "
        "control or the sensor ends it.",
        group="field",
    )
    store: str | None = setting(
        None,
        "With --rate-hz: the device's artifact store (a folder): policy rollouts are downloaded, "
        "verified and staged here, and a restarted agent runs the version it last ran.",
        group="field",
    )
    record: str | None = setting(
        None,
        "With --rate-hz: this agent's own JSON-lines record of every tick, uploaded to mission "
        "control when linked (each line stored once).",
        group="field",
    )
    log_level: LogLevel = log_level_setting("INFO")

    def __post_init__(self) -> None:
        if (self.sensor is None) != (self.actuator is None):
            raise ValueError("field mode needs both --sensor and --actuator (found only one)")
        if self.rate_hz is not None:
            if self.sensor is None:
                raise ValueError("--rate-hz runs the field loop: it needs --sensor and --actuator")
            if not 0 < self.rate_hz <= 10_000:
                raise ValueError(f"--rate-hz must be in (0, 10000]; found {self.rate_hz}")
            if self.step_lane_address:
                raise ValueError(
                    "--rate-hz runs the agent on its own clock, which has no step lane: give "
                    "--coordinator HOST:PORT (mission control's gRPC port, qmix-coordinator "
                    "--mode mission), or neither to run on its own"
                )
        elif not self.coordinator and not self.step_lane_address:
            raise ValueError(
                "give --coordinator HOST:PORT (its gRPC port) or --step-lane-address HOST:PORT "
                "(its step lane, joined without gRPC)"
            )
        if self.step_lane_address:
            parse_address(self.step_lane_address)  # ValueError naming the expected form
        if not self.step_lane and self.step_lane_address:
            raise ValueError(
                "--no-step-lane and --step-lane-address contradict each other; give one"
            )
        for name in ("watchdog_s", "give_up_s", "backoff_max_s", "loss_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; found {getattr(self, name)}")
        check_log_level(self.log_level)
