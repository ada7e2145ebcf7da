"""What one ``qmix-eval`` is told: the one declaration its flags, its ``--help`` and the library's
`evaluate` read (`qmix_edge.common.settings`). Shared knobs take their defaults from the
coordinator's declaration, so the two commands cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

from qmix_edge.common.settings import LogLevel, check_log_level, log_level_setting, setting

from ..coordinator.config import STEP_DEADLINE_MS, TEAM_POLICIES, TeamPolicy
from .faults import Fault, fault_plan_json, read_fault_plan

GROUPS = {
    "run": "what to evaluate",
    "team": "the coordinator and the agents",
    "procs": "the processes (start, stop, reconnect)",
    "trust": "trust (TLS, mutual TLS, tokens)",
    "net": "network namespaces",
    "field": "field evaluation (--field): agents on their own clocks",
}

FIELD_SCENARIOS: tuple[str, ...] = ("own_clocks", "link", "coordinator_killed")


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in FIELD_SCENARIOS]
    if unknown or not names:
        raise ValueError(
            f"--field-scenarios takes a comma-separated list of {list(FIELD_SCENARIOS)}; "
            f"found {text!r}"
        )
    return names


@dataclass(frozen=True)
class EvalSecurity:
    """TLS material and tokens for the whole team (paths to PEM files / a tokens JSON)."""

    ca: Path | None = None
    """CA that signed the coordinator's certificate (and, by default, the agents')."""
    server_cert: Path | None = None
    """The coordinator's certificate; it must name 127.0.0.1 (or give ``server_name``)."""
    server_key: Path | None = None
    """Its private key."""
    agent_certs: Path | None = None
    """Directory of ``<agent_id>.pem`` / ``<agent_id>.key``: mutual TLS when given."""
    client_ca: Path | None = None
    """CA of the agent certificates (default: ``ca``)."""
    tokens: Path | None = None
    """JSON {agent_id: token}: bearer tokens required."""
    server_name: str | None = None
    """Name the agents check the coordinator's certificate against."""

    def __post_init__(self) -> None:
        tls = [self.ca, self.server_cert, self.server_key]
        if any(x is not None for x in tls) and not all(x is not None for x in tls):
            raise ValueError("TLS needs --tls-ca, --tls-cert and --tls-key together")
        if self.agent_certs is not None and self.ca is None:
            raise ValueError("--tls-agent-certs (mutual TLS) needs --tls-ca/--tls-cert/--tls-key")

    def check(self, agent_ids: tuple[str, ...] | list[str]) -> None:
        """Every file exists before any process starts (a config error otherwise)."""
        files = [p for p in (self.ca, self.server_cert, self.server_key, self.tokens) if p]
        if self.agent_certs is not None:
            files += [self.agent_certs / f"{a}.{ext}" for a in agent_ids for ext in ("pem", "key")]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"TLS/token files not found: {missing}")
        if self.tokens is not None:
            from ..security import SecurityConfigError, load_tokens

            without = [a for a in agent_ids if a not in load_tokens(self.tokens)]
            if without:
                raise SecurityConfigError(
                    f"--tokens {self.tokens} has no token for {without}; give every agent of the "
                    "manifest its own token"
                )


def _path(text: str) -> Path:
    return Path(text).resolve()


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation (every field is a ``qmix-eval`` flag)."""

    artifacts: Path = setting(doc="Artifact directory (manifest.json).", parse=_path, group="run")
    report: Path = setting(
        doc="Where the JSON report goes (the PNG picture is written beside it).",
        parse=_path,
        group="run",
    )
    env: str | None = setting(
        None, "Env id; none = the env the manifest was trained on.", group="run"
    )
    episodes: int = setting(10, "Episodes to run.", group="run")
    seed: int = setting(
        0, "Episode i uses seed + i, in the distributed run and in the reference.", group="run"
    )
    episode_limit: int | None = setting(
        None, "Steps per episode; none = the env's limit.", group="run"
    )
    faults: tuple[Fault, ...] = setting(
        (),
        "Fault plan: a JSON list (inline, starting with '[') or a JSON file, e.g. "
        '[{"kind": "kill", "agent": "agent_0", "at_step": 5}]. Kinds: kill, stall, drop, '
        "restart_coordinator.",
        parse=read_fault_plan,
        show=fault_plan_json,
        metavar="PLAN",
        group="run",
    )
    timeout_s: float = setting(
        600.0, "Give up (exit 1) when the whole evaluation takes longer, in seconds.", group="run"
    )
    workdir: Path | None = setting(
        None,
        "Keep the run record (episodes.jsonl) and the processes' logs here; none = a temporary "
        "folder, removed after a successful run and named after a failed one.",
        parse=_path,
        group="run",
    )
    step_deadline_ms: int = setting(
        STEP_DEADLINE_MS, "The coordinator's step deadline, in ms.", group="team"
    )
    lease_steps: int = setting(
        5, "Missed steps after which the coordinator declares an agent dead.", group="team"
    )
    team_policy: TeamPolicy = setting(
        "continue_degraded",
        "What a dead agent does to the episode. Unlike qmix-coordinator (abort_episode), an "
        "evaluation keeps its episodes going through faults so their cost can be measured.",
        group="team",
    )
    step_lane: bool = setting(
        True,
        "Agents step on the coordinator's step lane; --no-step-lane: on the gRPC Steps stream.",
        group="team",
    )
    grpc_join: bool = setting(
        False,
        "Agents Join and Leave over gRPC (steps stay on the lane); by default they dial the step "
        "lane alone and load no gRPC. Implied by --no-step-lane.",
        group="team",
    )
    team_wait_s: float = setting(
        60.0,
        "Before each episode the coordinator waits up to this long for every seat to be filled, "
        "in seconds (qmix-coordinator --team-wait-s).",
        group="procs",
    )
    coordinator_start_s: float = setting(
        120.0,
        "How long the coordinator may take to serve (report its ports) after each start, in "
        "seconds; longer = a failure naming its log.",
        group="procs",
    )
    unplanned_restart_ms: int = setting(
        200,
        "Down time before restarting a coordinator that stopped before the run finished without "
        "a planned restart_coordinator fault (a planned one waits its restart_after_ms).",
        group="procs",
    )
    agent_backoff_max_s: float = setting(
        0.5,
        "Largest delay between an agent's reconnect attempts, in seconds (qmix-agent "
        "--backoff-max-s): short, so a restarted coordinator has its team back at once.",
        group="procs",
    )
    agent_give_up_s: float = setting(
        120.0,
        "An agent exits (a failure) when the coordinator has been unreachable this long, in "
        "seconds (qmix-agent --give-up-s); 0 = never.",
        group="procs",
    )
    agents_exit_s: float = setting(
        15.0,
        "After the run finished, how long the agents get to exit on their own before they are "
        "stopped, in seconds.",
        group="procs",
    )
    stop_grace_s: float = setting(
        5.0,
        "A process told to stop (SIGTERM) that is still running after this long is killed, in "
        "seconds.",
        group="procs",
    )
    tls_ca: Path | None = setting(
        None, "TLS: the CA of the coordinator's certificate.", parse=_path, group="trust"
    )
    tls_cert: Path | None = setting(
        None, "TLS: the coordinator's certificate.", parse=_path, group="trust"
    )
    tls_key: Path | None = setting(
        None, "TLS: the coordinator's private key.", parse=_path, group="trust"
    )
    tls_agent_certs: Path | None = setting(
        None,
        "Mutual TLS: a folder of <agent_id>.pem and <agent_id>.key (CN = agent id).",
        parse=_path,
        group="trust",
    )
    tls_client_ca: Path | None = setting(
        None, "CA of the agent certificates; none = --tls-ca.", parse=_path, group="trust"
    )
    tls_server_name: str | None = setting(
        None, "The name on the coordinator's certificate.", group="trust"
    )
    tokens: Path | None = setting(
        None, "JSON file {agent_id: token}: bearer tokens.", parse=_path, group="trust"
    )
    netns: bool = setting(
        False,
        "Run the coordinator and each agent in its own network namespace (root only).",
        group="net",
    )
    netns_rate: str | None = setting(
        None, "With --netns: shape each link to this rate (tc tbf), e.g. 10mbit.", group="net"
    )
    field: bool = setting(
        False,
        "Field evaluation: mission control (qmix-coordinator --mode mission), every agent on its "
        "own clock (qmix-agent --rate-hz) against a real-time simulator of the env, in each of "
        "--field-scenarios, beside the lockstep reference on the same seeds.",
        group="field",
    )
    field_rate_hz: float = setting(
        10.0, "The agents' control rate and the simulated world's tick rate.", group="field"
    )
    field_scenarios: tuple[str, ...] = setting(
        FIELD_SCENARIOS,
        "Which scenarios to run (comma-separated): own_clocks (nothing in the way), link (a "
        "delaying, lossy link between each device and its world), coordinator_killed (mission "
        "control killed one step into the middle episode, restarted with --resume).",
        parse=_scenarios,
        show=",".join,
        metavar="NAMES",
        group="field",
    )
    field_delay_ms: float = setting(
        40.0, "The link scenario's one-way delay, in ms.", group="field"
    )
    field_jitter_ms: float = setting(
        20.0, "The link scenario's extra delay, uniform in [0, this], in ms.", group="field"
    )
    field_loss: float = setting(
        0.05, "The link scenario's chance of losing each datagram, in [0, 1).", group="field"
    )
    field_lead_ms: int = setting(
        300, "How far ahead mission control announces each start and end, in ms.", group="field"
    )
    field_restart_after_ms: int = setting(
        1000,
        "coordinator_killed: how long mission control stays down before its restart, in ms.",
        group="field",
    )
    log_level: LogLevel = log_level_setting("WARNING")
    security: EvalSecurity = dataclass_field(init=False, repr=False, compare=False)
    """The TLS fields above as one value (derived)."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"--episodes must be >= 1; found {self.episodes}")
        if self.team_policy not in TEAM_POLICIES:
            raise ValueError(
                f"team_policy must be one of {TEAM_POLICIES}; found {self.team_policy!r}"
            )
        for name in (
            "timeout_s",
            "team_wait_s",
            "coordinator_start_s",
            "agent_backoff_max_s",
            "agents_exit_s",
            "stop_grace_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0; found {getattr(self, name)}"
                )
        if self.unplanned_restart_ms < 0 or self.agent_give_up_s < 0:
            raise ValueError(
                "--unplanned-restart-ms and --agent-give-up-s must be >= 0 (0 = the agents never "
                f"give up); found {self.unplanned_restart_ms} and {self.agent_give_up_s}"
            )
        if self.netns_rate and not self.netns:
            raise ValueError("--netns-rate needs --netns")
        if self.field:
            self._check_field()
        check_log_level(self.log_level)
        object.__setattr__(
            self,
            "security",
            EvalSecurity(
                ca=self.tls_ca,
                server_cert=self.tls_cert,
                server_key=self.tls_key,
                agent_certs=self.tls_agent_certs,
                client_ca=self.tls_client_ca,
                tokens=self.tokens,
                server_name=self.tls_server_name,
            ),
        )

    def _check_field(self) -> None:
        given = [
            flag
            for flag, on in (
                ("--faults", bool(self.faults)),
                ("--netns", self.netns),
                ("--tls-ca", self.tls_ca is not None),
                ("--tokens", self.tokens is not None),
            )
            if on
        ]
        if given:
            raise ValueError(
                f"--field runs its own scenarios and does not take {', '.join(given)} yet; "
                "evaluate those in lockstep (without --field)"
            )
        if not 0 < self.field_rate_hz <= 1000:
            raise ValueError(f"--field-rate-hz must be in (0, 1000]; found {self.field_rate_hz}")
        if self.field_delay_ms < 0 or self.field_jitter_ms < 0 or not 0 <= self.field_loss < 1:
            raise ValueError(
                "--field-delay-ms and --field-jitter-ms must be >= 0 and --field-loss in [0, 1); "
                f"found {self.field_delay_ms}, {self.field_jitter_ms}, {self.field_loss}"
            )
        if self.field_lead_ms < 0 or self.field_restart_after_ms < 0:
            raise ValueError("--field-lead-ms and --field-restart-after-ms must be >= 0")
        if "coordinator_killed" in self.field_scenarios and self.episodes < 2:
            raise ValueError(
                "the coordinator_killed scenario kills mission control in the middle episode: "
                f"it needs --episodes >= 2 (found {self.episodes})"
            )

    @property
    def lane_only(self) -> bool:
        """The agents dial only the coordinator's step lane."""
        return self.step_lane and not self.grpc_join
