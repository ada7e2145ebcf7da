"""qmix-coordinator: the gRPC server and step clock of one team (protocol qmix_edge.v1).

Owns the team's side of the wire contract (protos/qmix_edge/runtime/proto/v1/team.proto):
- Join: refuses a mismatched team with clear status codes (unknown agent NOT_FOUND, an artifact
  of another run FAILED_PRECONDITION, a second live agent ALREADY_EXISTS, malformed INVALID_ARGUMENT).
- The step clock. Simulation mode owns the environment, sends each agent only its own observation
  and mask (true sizes, float32 bit for bit), applies the actions and records everything. Field mode
  has no environment: it keeps the team in step at a fixed period and records what agents report.
- Legal actions only (`qmix_edge.runtime.legal`): a reply missing at the step deadline, or one out
  of range or masked (counted ``invalid``), is replaced by the one rule: the manifest's fallback
  action if the step's mask allows it, else the lowest allowed action. A late or stale reply is
  discarded and counted, never applied to another step. A disconnected agent is not waited for.
- An environment that raises ends that episode (reason ``env_error``, its message recorded) and
  the run goes on; `ENV_ERROR_LIMIT` consecutive env errors end the run as failed (exit 1).
- Honest outcomes: a run in which a seat was never filled, or no agent ever decided, is not a
  success (`EXIT_INCOMPLETE_TEAM`); episodes played while a seat was empty are counted apart.
- Liveness lease: an agent that misses ``lease_steps`` consecutive steps is dead; the team policy
  aborts the episode (``abort_episode``, default) or goes on with its fallback
  (``continue_degraded``). A dead agent's stream is closed; it may join again.
- Security (`qmix_edge.runtime.security`): TLS or mutual TLS, optional per-agent bearer tokens
  checked in an interceptor (UNAUTHENTICATED), and an agent may only Join, attach and Leave as the
  agent id its certificate or token proves (PERMISSION_DENIED otherwise). Malformed request bytes
  are answered INVALID_ARGUMENT (the servicer parses them itself), never crash the server.
- The step lane (`qmix_edge.runtime.lane`, on by default): the same step conversation over plain
  TCP frames (TLS with the same certificates), offered to agents that ask for it in their Join;
  an agent without gRPC joins and leaves on the lane itself, with the same checks. The Steps
  stream stays for agents that want neither. The step clock cannot tell the carriers apart.
- grpc.health.v1; graceful stop (SIGTERM: health NOT_SERVING, the step in flight finishes, the
  episode is recorded as stopped, agents get Goodbye SHUTDOWN); no silent port sharing.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qmix_edge.common import settings

from .. import lane, wire
from ..errors import RuntimeFailure, TeamMismatchError
from ..interceptor import TokenInterceptor
from ..legal import is_allowed, substitute
from ..proto.v1 import team_pb2 as pb
from ..proto.v1 import team_pb2_grpc as pb_grpc
from ..records import RecordWriter, resume_point
from ..security import (
    Authenticator,
    IdentityError,
    SecurityConfigError,
    ServerTls,
    host_of,
    is_loopback,
    load_tokens,
    peercert_agent_id,
    require_secure_or_loopback,
    token_matches,
)
from .config import (
    EXIT_FAILURE,
    EXIT_INCOMPLETE_TEAM,
    EXIT_OK,
    CoordinatorConfig,
    step_lane_port,
)
from .config import GROUPS as CONFIG_GROUPS

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WIRE_F32 = np.dtype("<f4")  # observations travel as little-endian float32
# A protobuf (upb) message keeps every bytes value ever set on it in its arena until the message
# itself is freed: a seat's reused StepRequest grows by its observation and mask bytes each step
# (80 B for simple_spread). It is rebuilt after this many team steps, which bounds that arena.
_STEP_MESSAGE_REUSE = 1024
ENV_ERROR_LIMIT = 3
"""Consecutive episodes ended by an environment error after which the run stops as failed."""


# ------------------------------------------------------------------------------------ the team
@dataclass(frozen=True)
class AgentSlot:
    """One seat of the team, as the artifact manifest describes it."""

    agent_id: str
    """The agent's id, e.g. ``agent_0``."""
    obs_dim: int
    """Length of the agent's own observation."""
    n_actions: int
    """The agent's number of actions."""
    fallback_action: int
    """Action applied when the agent's decision is missing."""
    sha256s: frozenset[str]
    """Graph hashes a joining agent may present: its fp32 graph and any reduced-precision copy."""


@dataclass(frozen=True)
class TeamSpec:
    """The team a coordinator serves: who may join, with which artifact."""

    team_id: str
    """The training run the artifacts come from (manifest ``run_id``)."""
    agents: tuple[AgentSlot, ...]
    """Seats in the environment's agent order."""
    env_id: str = ""
    """The environment the policy was trained on (simulation default)."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Its keyword arguments."""
    env_options: Mapping[str, Any] = field(default_factory=dict)
    """The other `make_env` arguments of training (n_agents, team_reward, episode_limit)."""

    @property
    def agent_ids(self) -> tuple[str, ...]:
        return tuple(a.agent_id for a in self.agents)

    def index(self, agent_id: str) -> int | None:
        for i, a in enumerate(self.agents):
            if a.agent_id == agent_id:
                return i
        return None

    @classmethod
    def from_manifest(cls, manifest: Any) -> TeamSpec:
        """Build the team from a `qmix_edge.runtime.artifact.Manifest`."""
        return cls(
            team_id=manifest.run_id,
            agents=tuple(
                AgentSlot(
                    agent_id=a.agent_id,
                    obs_dim=int(a.obs_dim),
                    n_actions=int(a.n_actions),
                    fallback_action=int(a.fallback_action),
                    sha256s=frozenset([a.sha256, *(v.sha256 for v in a.variants)]),
                )
                for a in manifest.agents
            ),
            env_id=manifest.env_id,
            env_kwargs=dict(manifest.env_kwargs),
            env_options=dict(manifest.env_options),
        )

    @classmethod
    def from_artifacts(cls, artifact_dir: str | Path, public_key: Any = None) -> TeamSpec:
        """Load and verify the manifest of an artifact directory and build the team from it."""
        from ..artifact import Manifest

        return cls.from_manifest(Manifest.load(artifact_dir, public_key=public_key))


@dataclass
class AgentCounters:
    """Per-agent statistics of one coordinator process (mutable, guarded by the coordinator)."""

    joins: int = 0
    rejoins: int = 0
    decisions: int = 0
    """Replies applied as sent (in range and allowed)."""
    fallbacks: int = 0
    """Steps on which the legal-action rule replaced the agent's reply (missing or invalid)."""
    late_replies: int = 0
    invalid_actions: int = 0
    """Replies out of range or masked (replaced; also counted in ``fallbacks``)."""
    deaths: int = 0
    disconnects: int = 0
    malformed: int = 0


@dataclass(frozen=True)
class RunSummary:
    """What `Coordinator.run` did."""

    finished: bool
    """All requested episodes ran (False: stopped early)."""
    episodes: tuple[dict[str, Any], ...]
    """One dict per episode run here: episode_index, seed, steps, return, reason."""
    team_steps: int
    """Team steps of the whole run (including steps of a resumed run's earlier processes)."""
    counters: Mapping[str, AgentCounters]
    """Per-agent counters of this process."""
    never_joined: tuple[str, ...] = ()
    """Agents that never joined this process while it ran episodes (their seats stayed empty)."""
    failure: str | None = None
    """Why the run could not go on (e.g. repeated environment errors); None when it could."""

    @property
    def incomplete_team_episodes(self) -> int:
        """Episodes during which at least one seat was empty (see the episode's ``absent``)."""
        return sum(1 for e in self.episodes if e.get("absent"))

    @property
    def decisions(self) -> int:
        """Replies applied as sent, over every agent."""
        return sum(c.decisions for c in self.counters.values())

    @property
    def exit_status(self) -> int:
        """qmix-coordinator's exit code for this run (`EXIT_OK`, `EXIT_FAILURE`,
        `EXIT_INCOMPLETE_TEAM`)."""
        if self.failure is not None:
            return EXIT_FAILURE
        played = any(e["steps"] > 0 for e in self.episodes)
        if self.never_joined or (played and self.decisions == 0):
            return EXIT_INCOMPLETE_TEAM
        return EXIT_OK


# ------------------------------------------------------------------------------------ sessions
class _Session:
    """One joined agent. Lives on the coordinator's event loop; its Steps handler writes for it."""

    def __init__(self, agent_index: int, agent_id: str, client_name: str) -> None:
        self.id = uuid.uuid4().hex
        self.agent_index = agent_index
        self.agent_id = agent_id
        self.client_name = client_name
        self.created = time.monotonic()
        # Once attached: the Steps stream's grpc.aio context, or the step lane connection.
        self.context: Any = None
        self.ended = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._write_lock = asyncio.Lock()
        # This seat's StepRequest, reused from step to step (only the changing fields are set; the
        # previous step's write has completed before the next step touches it) and rebuilt every
        # _STEP_MESSAGE_REUSE team steps (see there).
        self.step_message: pb.CoordinatorMessage | None = None

    @property
    def attached(self) -> bool:
        return self.context is not None

    @property
    def lane(self) -> _LaneConnection | None:
        """The step lane connection this session steps on, if it does."""
        c = self.context
        return c if isinstance(c, _LaneConnection) else None

    async def write(self, msg: pb.CoordinatorMessage) -> bool:
        """Send one message on the Steps stream; False when the stream is gone."""
        if self.context is None or self.ended:
            return False
        try:
            async with self._write_lock:
                await self.context.write(msg)
            return True
        except Exception as e:  # a broken stream: the read side ends the session
            log.debug("write to %s failed: %s", self.agent_id, e)
            return False


@dataclass
class _StepWindow:
    """The one step whose replies are being collected."""

    episode_id: int
    step: int
    expected: set[int]
    masks: dict[int, np.ndarray]
    done: asyncio.Future[None]
    replies: dict[int, pb.StepReply] = field(default_factory=dict)
    invalid: set[int] = field(default_factory=set)
    late: dict[int, int] = field(default_factory=dict)

    def check_complete(self) -> None:
        if len(self.replies) + len(self.invalid) >= len(self.expected) and not self.done.done():
            self.done.set_result(None)


class Coordinator:
    """One team's coordinator: sessions, step clock, records.

    The gRPC server (grpc.aio) and the step clock share one asyncio event loop in a background
    thread, so a step costs no thread hand-offs in this process. The public methods are
    synchronous and thread-safe: `start`, `run` (blocks until the run ends), `request_stop`,
    `close`. Simulation: pass ``env`` (a `qmix_edge.envs.TeamEnv` whose agents match ``team``).
    """

    def __init__(
        self,
        team: TeamSpec,
        config: CoordinatorConfig,
        *,
        env: Any = None,
        record_path: str | Path | None = None,
        tls: ServerTls | None = None,
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        """``tls``: serve over TLS (mutual TLS when it has a client CA: agent certificates name
        their agent id). ``tokens``: agent id -> bearer token, required on every call."""
        self.team = team
        self.tls = tls
        self.tokens = dict(tokens) if tokens else None
        if self.tokens is not None:
            unknown = sorted(set(self.tokens) - set(team.agent_ids))
            missing = sorted(set(team.agent_ids) - set(self.tokens))
            if unknown or missing:
                raise SecurityConfigError(
                    f"the tokens must name exactly the team's agents {list(team.agent_ids)}; "
                    f"unknown ids {unknown}, agents without a token {missing}"
                )
        self.auth = Authenticator(
            mutual_tls=tls is not None and tls.mutual, tokens=self.tokens is not None
        )
        self.config = config
        self.env = env
        self.instance = uuid.uuid4().hex[:12]
        if config.mode == "simulation":
            if env is None:
                raise TeamMismatchError("simulation mode needs an environment; pass env=...")
            _check_env_matches(team, env)
        self.episode_limit = int(config.episode_limit or (env.spec.episode_limit if env else 0))
        self.counters = {a.agent_id: AgentCounters() for a in team.agents}
        self.port: int | None = None
        self.lane_port = 0
        """The step lane's bound port once started (0: no lane)."""
        self._lane_server: asyncio.Server | None = None
        self._lanes: set[_LaneConnection] = set()
        self._live: dict[int, _Session] = {}
        self._sessions: dict[str, _Session] = {}
        self._ever_joined: set[int] = set()
        self._window: _StepWindow | None = None
        self._current_episode = 0
        self._stopping = threading.Event()
        record_path = record_path if record_path is not None else config.record
        self._record_path = Path(record_path) if record_path else None
        self._start_index, self._team_step = (
            resume_point(self._record_path) if config.resume and self._record_path else (0, 0)
        )
        self._records: RecordWriter | None = None
        self._t0 = time.perf_counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="coordinator-loop"
        )
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._stop_event: asyncio.Event | None = None
        self._team_changed: asyncio.Event | None = None

    # ----------------------------------------------------------------------------- serving
    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the coordinator's loop from any other thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, address: str | None = None) -> int:
        """Bind ``address`` (default: the config's ``host:port``; port 0 = any free port), start
        serving, return the bound port. The step lane binds the config's ``step_lane_port``
        (none = this port + 1, or any free port when this one is 0).

        Raises `RuntimeFailure` when the address cannot be bound (in use: ports are never shared).
        """
        if not self._thread.is_alive():
            self._thread.start()
        if address is None:
            address = self.config.address
        try:
            port: int = self._call(self._start(address), timeout=30)
        except RuntimeFailure:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)  # so a later close() finds no loop to call into
            raise
        self.port = port
        if self._record_path is not None:
            self._records = RecordWriter(self._record_path)
            self._record(
                "run_start",
                coordinator_instance=self.instance,
                team_id=self.team.team_id,
                mode=self.config.mode,
                resumed_from=self._start_index,
                time=time.time(),
            )
        log.info(
            "coordinator %s serving team %s on port %d", self.instance, self.team.team_id, port
        )
        return port

    async def _start(self, address: str) -> int:
        self._stop_event = asyncio.Event()
        self._team_changed = asyncio.Event()
        max_bytes = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=[TokenInterceptor(self.tokens)] if self.tokens else None,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ],
        )
        _add_team_service(_TeamServicer(self), server)
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        _check_port_free(address)  # before gRPC, whose C core prints its own bind error
        try:
            if self.tls is not None:
                port = server.add_secure_port(address, self.tls.credentials())
            else:
                port = server.add_insecure_port(address)
        except SecurityConfigError:
            raise
        except RuntimeError as e:
            raise RuntimeFailure(
                f"cannot bind {address}: the port is in use or not permitted ({e}). "
                "Stop the other server or choose another --port (0 = any free port)."
            ) from e
        if port == 0 or (not address.endswith(":0") and not address.endswith(f":{port}")):
            raise RuntimeFailure(
                f"cannot bind {address} (bound port {port}); the port is in use. "
                "Stop the other server or choose another --port."
            )
        if self.config.step_lane:
            try:
                lane_port = step_lane_port(
                    int(address.rpartition(":")[2]), self.config.step_lane_port
                )
                self._lane_server = await self._start_lane(host_of(address), lane_port)
            except BaseException:
                await server.stop(0)
                raise
        await server.start()
        for name in ("", wire.HEALTH_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return port

    async def _start_lane(self, host: str, port: int) -> asyncio.Server:
        """Listen for step lane connections on ``host`` (the gRPC host), on one address only so a
        port-0 lane has one port to tell; a port in use fails loudly, as gRPC's does."""
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # never SO_REUSEPORT
                sock.bind(sockaddr)
                sock.listen(128)
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise RuntimeFailure(
                f"cannot bind the step lane on {host}:{port}: the port is in use or not permitted "
                f"({e}). Choose another --step-lane-port (0 = any free port) or --no-step-lane."
            ) from e
        ssl_ctx = self.tls.ssl_context() if self.tls is not None else None
        srv = await asyncio.get_running_loop().create_server(
            lambda: _LaneConnection(self),
            sock=sock,
            ssl=ssl_ctx,
            # A connection that never finishes its handshake is dropped as one that never attaches.
            ssl_handshake_timeout=lane.ATTACH_TIMEOUT_S if ssl_ctx is not None else None,
        )
        self.lane_port = int(sock.getsockname()[1])
        log.info("step lane on %s:%d (%s)", host, self.lane_port, "TLS" if ssl_ctx else "plain")
        return srv

    def request_stop(self) -> None:
        """Begin a graceful stop: health NOT_SERVING, the step in flight finishes, `run` returns.

        Safe from any thread and from signal handlers."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("stop requested: finishing the step in flight")
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._stop_in_loop()))

    async def _stop_in_loop(self) -> None:
        assert self._stop_event is not None and self._team_changed is not None
        self._stop_event.set()
        self._team_changed.set()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    def close(self, grace_s: float = 2.0) -> None:
        """Stop the server (after `run` returned, or to abandon it) and close the record file."""
        self.request_stop()
        if self._thread.is_alive():
            try:
                self._call(self._close(grace_s), timeout=grace_s + 5)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
        if self._records is not None:
            self._records.close()
            self._records = None

    async def _close(self, grace_s: float) -> None:
        await self._stop_in_loop()
        for s in list(self._sessions.values()):
            await self._end_session(
                s, goodbye=pb.GOODBYE_REASON_SHUTDOWN, detail="coordinator closed"
            )
        if self._lane_server is not None:
            self._lane_server.close()
            self._lane_server = None
        for conn in list(self._lanes):
            conn.close()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    # ------------------------------------------------------------------------------- joins
    async def join(self, req: pb.JoinRequest, peer: str, *, via: str = "grpc") -> pb.JoinReply:
        """Admit one agent or raise `_Refusal` with the status code to answer. ``via``: what the
        Join came on ("grpc", or "lane": the step lane's join frame), for the record."""
        if self._stopping.is_set():
            raise _Refusal(grpc.StatusCode.UNAVAILABLE, "the coordinator is shutting down")
        if req.protocol_version != wire.PROTOCOL_VERSION:
            raise _Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {req.protocol_version} is not spoken here; this coordinator "
                f"speaks {wire.PROTOCOL_VERSION} (qmix_edge.v1, protos/PROTOCOL.md). Upgrade the "
                "agent.",
            )
        if not req.agent_id:
            raise _Refusal(grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        if not _SHA256.match(req.artifact_sha256):
            raise _Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"artifact_sha256 must be 64 lowercase hex digits; found {req.artifact_sha256[:80]!r}",
            )
        index = self.team.index(req.agent_id)
        if index is None:
            raise _Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"agent {req.agent_id[:80]!r} is not in team {self.team.team_id}; its agents are "
                f"{list(self.team.agent_ids)}",
            )
        slot = self.team.agents[index]
        if req.artifact_sha256 not in slot.sha256s:
            raise _Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {slot.agent_id!r} runs artifact {req.artifact_sha256[:12]}..., but team "
                f"{self.team.team_id} expects {sorted(h[:12] + '...' for h in slot.sha256s)}: the "
                "agent was exported from another run or another export. Copy the coordinator's "
                "artifact directory to the device.",
            )
        old = self._live.get(index)
        if old is not None:
            stale = not old.attached and (
                time.monotonic() - old.created > self.config.attach_timeout_s
            )
            if not stale:
                raise _Refusal(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"agent {slot.agent_id!r} already has a live session (from "
                    f"{old.client_name or 'unknown'}); stop it first or wait for its lease "
                    "to expire",
                )
            await self._end_session(old, goodbye=None, detail="superseded")
        session = _Session(index, slot.agent_id, req.client_name[:200])
        rejoin = index in self._ever_joined
        self._ever_joined.add(index)
        self._live[index] = session
        self._sessions[session.id] = session
        c = self.counters[slot.agent_id]
        c.joins += 1
        c.rejoins += int(rejoin)
        self._record(
            "join",
            agent_id=slot.agent_id,
            session_id=session.id,
            client_name=session.client_name,
            peer=peer,
            via=via,
            rejoin=rejoin,
        )
        log.info("agent %s joined (%s, %s)", slot.agent_id, session.client_name, peer)
        return pb.JoinReply(
            session_id=session.id,
            team_id=self.team.team_id,
            coordinator_instance=self.instance,
            mode=pb.MODE_SIMULATION if self.config.mode == "simulation" else pb.MODE_FIELD,
            agent_index=index,
            n_agents=len(self.team.agents),
            fallback_action=slot.fallback_action,
            step_deadline_ms=self.config.step_deadline_ms,
            lease_steps=self.config.lease_steps,
            step_period_ms=self.config.step_period_ms,
            episode_limit=self.episode_limit,
            obs_dim=slot.obs_dim,
            n_actions=slot.n_actions,
            current_episode_id=self._current_episode,
            step_lane_port=self.lane_port if req.step_lane else 0,
        )

    def attach(self, session_id: str, context: Any) -> _Session:
        s = self._sessions.get(session_id)
        if s is None or s.ended:
            raise _Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"session {session_id[:40]!r} is unknown or over; Join again",
            )
        if s.attached:
            raise _Refusal(
                grpc.StatusCode.ALREADY_EXISTS, "this session already has a Steps stream"
            )
        s.context = context
        assert self._team_changed is not None
        self._team_changed.set()
        self._record(
            "attach",
            agent_id=s.agent_id,
            session_id=s.id,
            carrier="stream" if s.lane is None else "lane",
        )
        return s

    def attached_message(self, s: _Session) -> pb.CoordinatorMessage:
        """The acknowledgement of ``s``'s attach, which its carrier sends before anything else."""
        return pb.CoordinatorMessage(
            attached=pb.Attached(
                session_id=s.id,
                current_episode_id=self._current_episode,
                agents_attached=sum(1 for x in self._live.values() if x.attached),
                n_agents=len(self.team.agents),
            )
        )

    async def leave(self, session_id: str, reason: str) -> None:
        s = self._sessions.get(session_id)
        if s is not None:
            await self._end_session(s, goodbye=None, detail=f"left: {reason[:200]}")

    async def _end_session(self, s: _Session, *, goodbye: int | None, detail: str) -> None:
        if s.ended:
            return
        if goodbye is not None:
            await s.write(pb.CoordinatorMessage(goodbye=pb.Goodbye(reason=goodbye, detail=detail)))  # type: ignore[arg-type]
        self._forget(s, detail)

    def _forget(self, s: _Session, detail: str) -> None:
        """Drop a session (synchronously, on the loop) and wake whoever waits on it."""
        if s.ended:
            return
        s.ended = True
        self._sessions.pop(s.id, None)
        if self._live.get(s.agent_index) is s:
            del self._live[s.agent_index]
        if detail == "disconnected":
            self.counters[s.agent_id].disconnects += 1
        w = self._window
        if w is not None and s.agent_index in w.expected and s.agent_index not in w.replies:
            w.expected.discard(s.agent_index)  # it will not answer: stop waiting for it
            w.check_complete()
        if self._team_changed is not None:
            self._team_changed.set()
        if not s.closed.done():
            s.closed.set_result(None)
        self._record("leave", agent_id=s.agent_id, session_id=s.id, reason=detail)
        log.info("agent %s session ended: %s", s.agent_id, detail)

    # ----------------------------------------------------------------------------- replies
    def on_reply(self, s: _Session, reply: pb.StepReply) -> None:
        """Take one StepReply: kept only if it answers the step in flight, else counted late."""
        w = self._window
        i = s.agent_index
        if (
            w is None
            or s.ended
            or reply.episode_id != w.episode_id
            or reply.step != w.step
            or i not in w.expected
            or i in w.replies
            or i in w.invalid
        ):
            self.counters[s.agent_id].late_replies += 1
            if w is not None:
                w.late[i] = w.late.get(i, 0) + 1
            log.debug(
                "discarded reply of %s for episode %d step %d (now %s)",
                s.agent_id,
                reply.episode_id,
                reply.step,
                (w.episode_id, w.step) if w else None,
            )
            return
        a = reply.action
        mask = w.masks.get(i)
        n = self.team.agents[i].n_actions
        if not is_allowed(a, n, mask):
            w.invalid.add(i)
            c = self.counters[s.agent_id]
            c.invalid_actions += 1
            # Once per agent at WARNING: a hostile agent must not flood the log either.
            log.log(
                logging.WARNING if c.invalid_actions == 1 else logging.DEBUG,
                "agent %s answered action %d at episode %d step %d, which is %s; replaced by the "
                "legal-action rule (further invalid replies of this agent are logged at DEBUG)",
                s.agent_id,
                a,
                w.episode_id,
                w.step,
                "masked" if 0 <= a < n else f"outside [0, {n})",
            )
        else:
            w.replies[i] = reply
        w.check_complete()

    # --------------------------------------------------------------------------- the clock
    def run(self) -> RunSummary:
        """Run the configured episodes (or until `request_stop`); blocks; returns what happened."""
        if self._server is None:
            raise RuntimeFailure("call start() before run()")
        summary: RunSummary = self._call(self._run())
        return summary

    async def _run(self) -> RunSummary:
        assert self._stop_event is not None
        episodes: list[dict[str, Any]] = []
        index = self._start_index
        last = self.config.episodes if self.config.episodes > 0 else math.inf
        env_errors = 0  # consecutive episodes ended by the environment raising
        failure: str | None = None
        while index < last and not self._stop_event.is_set():
            await self._wait_for_team()
            if self._stop_event.is_set():
                break
            ep = await self._run_episode(index)
            episodes.append(ep)
            if ep["reason"] == "stopped":
                break
            index += 1
            env_errors = env_errors + 1 if ep["reason"] == "env_error" else 0
            if env_errors >= ENV_ERROR_LIMIT:
                failure = (
                    f"the environment failed in {env_errors} consecutive episodes (the last: "
                    f"{ep['error']}); fix the environment or its kwargs and run again"
                )
                log.error("stopping the run: %s", failure)
                break
        finished = index >= last
        if finished or failure is not None:  # either way the run is over: agents may exit
            reason = pb.GOODBYE_REASON_RUN_FINISHED
            detail = "run finished" if failure is None else "run ended: the environment failed"
        else:
            reason, detail = pb.GOODBYE_REASON_SHUTDOWN, "coordinator stopping"
        ran = any(e["steps"] > 0 or e["reason"] == "env_error" for e in episodes)
        never_joined = tuple(
            a.agent_id for i, a in enumerate(self.team.agents) if ran and i not in self._ever_joined
        )
        await asyncio.gather(
            *(
                self._end_session(s, goodbye=reason, detail=detail)
                for s in list(self._sessions.values())
            )
        )
        summary = RunSummary(
            finished,
            tuple(episodes),
            self._team_step,
            dict(self.counters),
            never_joined=never_joined,
            failure=failure,
        )
        self._record(
            "run_end",
            finished=finished,
            team_steps=self._team_step,
            stats={k: vars(v) for k, v in self.counters.items()},
            never_joined=list(never_joined),
            incomplete_team_episodes=summary.incomplete_team_episodes,
            failure=failure,
            exit_status=summary.exit_status,
        )
        return summary

    async def _wait_for_team(self) -> None:
        assert self._stop_event is not None and self._team_changed is not None
        deadline = time.monotonic() + self.config.team_wait_s
        while not self._stop_event.is_set():
            attached = sum(1 for s in self._live.values() if s.attached)
            if attached == len(self.team.agents):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "starting with %d of %d agents after waiting %.1f s",
                    attached,
                    len(self.team.agents),
                    self.config.team_wait_s,
                )
                return
            self._team_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._team_changed.wait(), left)

    async def _broadcast(self, msg: pb.CoordinatorMessage) -> None:
        await asyncio.gather(*(s.write(msg) for s in list(self._live.values()) if s.attached))

    async def _run_episode(self, index: int) -> dict[str, Any]:
        assert self._stop_event is not None
        cfg = self.config
        seed = cfg.seed + index
        self._current_episode += 1
        episode_id = self._current_episode
        n = len(self.team.agents)
        ts = None
        env_error: str | None = None
        if cfg.mode == "simulation":
            try:
                ts = self.env.reset(seed=seed)
            except Exception as e:  # an env bug: this episode ends, the run goes on
                env_error = _env_failure("reset", seed, e)
        self._record("episode_start", episode_id=episode_id, episode_index=index, seed=seed)
        await self._broadcast(
            pb.CoordinatorMessage(episode_start=pb.EpisodeStart(episode_id=episode_id, seed=seed))
        )
        ids = self.team.agent_ids
        misses = [0] * n
        dead: set[int] = set()
        absent: set[int] = set()  # seats empty at some step of this episode
        prev_actions: np.ndarray | None = None
        total, reason, steps = 0.0, "limit", 0
        period = cfg.step_period_ms / 1000.0
        t_start = time.perf_counter()
        for step in range(self.episode_limit if env_error is None else 0):
            if self._stop_event.is_set():
                reason = "stopped"
                break
            alive = ts.alive if ts is not None else np.ones(n, dtype=bool)
            alive_now = np.asarray(alive, dtype=bool).tolist()
            absent.update(
                i
                for i in range(n)
                if alive_now[i] and not (i in self._live and self._live[i].attached)
            )
            actions, got, invalid, exchange_us, late = await self._exchange(
                episode_id, step, ts, alive, prev_actions
            )
            prev_actions = actions if ts is not None else None
            fallback = [ids[i] for i in range(n) if alive_now[i] and i not in got]
            for i in range(n):
                if not alive_now[i]:
                    continue
                if i in got:
                    misses[i] = 0
                    self.counters[ids[i]].decisions += 1
                    continue
                self.counters[ids[i]].fallbacks += 1
                if i in invalid:  # it answered: alive, though its answer was replaced
                    misses[i] = 0
                    continue
                misses[i] += 1
                if misses[i] >= cfg.lease_steps and i not in dead:
                    dead.add(i)
                    await self._declare_dead(i, misses[i])
            step_rec: dict[str, Any] = {
                "type": "step",
                "episode_id": episode_id,
                "episode_index": index,
                "step": step,
                "team_step": self._team_step,
                "actions": actions.tolist(),
                "fallback": fallback,
                "invalid": [ids[i] for i in sorted(invalid)],
                "late": {ids[i]: k for i, k in late.items()},
                "exchange_us": exchange_us,
                "t_ms": round((time.perf_counter() - self._t0) * 1000.0, 3),
                "decision_us": {ids[i]: got[i].decision_us for i in got},
            }
            self._team_step += 1
            steps = step + 1
            if dead and cfg.team_policy == "abort_episode":
                names = [ids[i] for i in sorted(dead)]
                reason = f"aborted: {', '.join(names)} silent for {cfg.lease_steps} steps"
                step_rec["reward"], step_rec["applied"] = None, False
                self._record_step(step_rec)
                break
            if ts is not None:
                try:
                    result = self.env.step(actions)
                except Exception as e:  # an env bug: this episode ends, the run goes on
                    env_error = _env_failure(f"step {step} of", seed, e)
                    step_rec["reward"], step_rec["applied"] = None, False
                    self._record_step(step_rec)
                    break
                total += float(result.reward)
                step_rec["reward"], step_rec["applied"] = float(result.reward), True
                self._record_step(step_rec)
                ts = result.next
                if result.done:
                    reason = "terminated" if result.terminated else "truncated"
                    break
            else:
                reports = {ids[i]: dict(got[i].report) for i in got}
                step_rec["reports"], step_rec["applied"] = reports, True
                self._record_step(step_rec)
            if cfg.stop_after_steps is not None and self._team_step >= cfg.stop_after_steps:
                log.info("stop_after_steps=%d reached", cfg.stop_after_steps)
                self.request_stop()
                await self._stop_in_loop()
            if period > 0:
                pause = t_start + (step + 1) * period - time.perf_counter()
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop_event.wait(), pause)
        if env_error is not None:
            reason = "env_error"
        ep: dict[str, Any] = {
            "episode_id": episode_id,
            "episode_index": index,
            "seed": seed,
            "steps": steps,
            "return": total,
            "reason": reason,
            "absent": [ids[i] for i in sorted(absent)],
        }
        if env_error is not None:
            ep["error"] = env_error
        self._record("episode_end", **ep)
        await self._broadcast(
            pb.CoordinatorMessage(
                episode_end=pb.EpisodeEnd(
                    episode_id=episode_id, steps=steps, team_return=total, reason=reason
                )
            )
        )
        return ep

    async def _exchange(
        self,
        episode_id: int,
        step: int,
        ts: Any,
        alive: np.ndarray,
        prev_actions: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[int, pb.StepReply], set[int], int, dict[int, int]]:
        """Send step ``step`` to every live agent and collect replies until all or the deadline.

        Returns (actions int64 (n_agents,): every one legal under the step's mask, valid replies by
        agent index, agents whose reply was invalid (replaced), exchange time in us, replies
        discarded during this step by agent index).
        """
        n = len(self.team.agents)
        loop = asyncio.get_running_loop()
        live = {i: s for i, s in self._live.items() if s.attached and alive[i]}
        requests: list[tuple[_Session, pb.CoordinatorMessage]] = []
        masks: dict[int, np.ndarray] = {}
        avail_all = np.zeros((0, 0), dtype=bool)  # field mode: no masks here
        if ts is not None:
            # Once per step for the whole team: the observations (n_agents, max obs_dim) and a
            # private copy of the masks (n_agents, max n_actions) the replies are checked against
            # (the env may reuse its arrays).
            obs_all = np.ascontiguousarray(ts.obs)
            avail_all = np.array(ts.avail)
            # Anything but the env contract's float32 and bool goes through the codec, which
            # converts or refuses it.
            exact = obs_all.dtype == _WIRE_F32 and avail_all.dtype == np.bool_
        deadline_ms = self.config.step_deadline_ms
        team_step = self._team_step
        rebuild = team_step % _STEP_MESSAGE_REUSE == 0
        for i, s in live.items():
            msg = s.step_message
            if msg is None or rebuild:
                msg = s.step_message = self._new_step_message(i, with_tensors=ts is not None)
            req = msg.step_request
            req.episode_id = episode_id
            req.step = step
            req.deadline_ms = deadline_ms
            req.team_step = team_step
            if prev_actions is not None:
                req.previous_action = int(prev_actions[i])
            else:
                req.ClearField("previous_action")
            if ts is not None:
                slot = self.team.agents[i]
                # The agent's own observation (obs_dim,) float32 at its true size, bit for bit,
                # and its mask (n_actions,) bool, as raw little-endian bytes.
                obs = obs_all[i, : slot.obs_dim]
                mask = avail_all[i, : slot.n_actions]
                if exact:
                    req.observation.data = obs.tobytes()
                    req.action_mask.data = mask.tobytes()
                else:
                    req.observation.CopyFrom(wire.encode(obs))
                    req.action_mask.CopyFrom(wire.encode(mask))
                    mask = np.array(mask, dtype=bool)
                    s.step_message = None  # its tensor headers may differ: rebuild next step
                masks[i] = mask
            requests.append((s, msg))
        w = _StepWindow(episode_id, step, set(live), masks, loop.create_future())
        self._window = w
        t0 = time.perf_counter()
        timer = loop.call_later(
            self.config.step_deadline_ms / 1000.0,
            lambda: None if w.done.done() else w.done.set_result(None),
        )
        # Step lane sessions are sent at once (a buffered socket write); Steps streams await
        # their writes together.
        streams = []
        for s, msg in requests:
            link = s.lane
            if link is None:
                streams.append((s, msg))
            elif s.ended or not link.send(msg):  # the lane is gone: do not wait for this agent
                w.expected.discard(s.agent_index)
        if streams:
            sent = await asyncio.gather(*(s.write(msg) for s, msg in streams))
            for (s, _), ok in zip(streams, sent, strict=True):
                if not ok:  # the stream is gone: do not wait for this agent
                    w.expected.discard(s.agent_index)
        w.check_complete()
        await w.done
        timer.cancel()
        self._window = None
        exchange_us = int((time.perf_counter() - t0) * 1e6)
        got = w.replies
        agents = self.team.agents
        actions = np.empty(n, dtype=np.int64)  # (n_agents,)
        for i in range(n):
            if i in got:
                actions[i] = got[i].action  # checked against the mask on arrival (on_reply)
                continue
            slot = agents[i]
            seat_mask = masks.get(i)
            if seat_mask is None and ts is not None:  # an empty seat: the env's mask still holds
                seat_mask = avail_all[i, : slot.n_actions]
            actions[i] = substitute(slot.fallback_action, slot.n_actions, seat_mask)
        if ts is not None:
            # The action of an agent no longer in the episode is a placeholder the env ignores.
            actions[~np.asarray(alive, dtype=bool)] = 0
        return actions, got, w.invalid, exchange_us, w.late

    def _new_step_message(self, i: int, *, with_tensors: bool) -> pb.CoordinatorMessage:
        """Agent ``i``'s reusable StepRequest with its constant tensor headers pre-set."""
        msg = pb.CoordinatorMessage()
        req = msg.step_request
        if with_tensors:
            slot = self.team.agents[i]
            req.observation.CopyFrom(wire.encode(np.zeros(slot.obs_dim, dtype=np.float32)))
            req.action_mask.CopyFrom(wire.encode(np.zeros(slot.n_actions, dtype=bool)))
        return msg

    async def _declare_dead(self, i: int, missed: int) -> None:
        """The lease of agent ``i`` expired. A live session is closed (counted as a death); an agent
        that is already gone only triggers the team policy again."""
        agent_id = self.team.agents[i].agent_id
        s = self._live.get(i)
        log.warning(
            "agent %s missed %d consecutive steps (%s): lease expired (%s)",
            agent_id,
            missed,
            "connected" if s is not None else "not connected",
            self.config.team_policy,
        )
        if s is not None:
            self.counters[agent_id].deaths += 1
            await self._end_session(
                s, goodbye=pb.GOODBYE_REASON_LEASE_EXPIRED, detail="lease expired"
            )

    def _record(self, record_type: str, **fields: Any) -> None:
        if self._records is not None:
            self._records.write(record_type, **fields)

    def _record_step(self, record: dict[str, Any]) -> None:
        """The hot path's `_record`: ``record`` already holds its ``type``."""
        if self._records is not None:
            self._records.write_record(record)


def _env_failure(where: str, seed: int, error: Exception) -> str:
    """The record's (and the log's) account of an environment that raised."""
    message = f"{type(error).__name__}: {error}"
    log.error("the environment raised in %s the episode with seed %d: %s", where, seed, message)
    log.debug("environment traceback", exc_info=error)
    return message


def make_team_env(
    team: TeamSpec, env_id: str | None = None, episode_limit: int | None = None
) -> Any:
    """Make the simulation environment of ``team`` with `qmix_edge.envs.make_env`.

    Without ``env_id`` it is the training environment recorded in the manifest (id, kwargs, team
    size, team reward, episode limit); with one, that id with the manifest's team size.
    """
    from qmix_edge.envs import make_env

    opts = {k: v for k, v in team.env_options.items() if v is not None}
    same = env_id is None or env_id == team.env_id
    kwargs: dict[str, Any] = {
        "n_agents": int(opts.get("n_agents", len(team.agents))),
        "episode_limit": episode_limit or (opts.get("episode_limit") if same else None),
    }
    if same and "team_reward" in opts:
        kwargs["team_reward"] = opts["team_reward"]
    env = make_env(
        env_id or team.env_id, env_kwargs=dict(team.env_kwargs) if same else None, **kwargs
    )
    _check_env_matches(team, env)
    return env


def _check_env_matches(team: TeamSpec, env: Any) -> None:
    spec = env.spec
    found = [(a.agent_id, a.obs_dim, a.n_actions) for a in spec.agents]
    expected = [(a.agent_id, a.obs_dim, a.n_actions) for a in team.agents]
    if found != expected:
        raise TeamMismatchError(
            f"the environment {spec.env_id!r} has agents (id, obs_dim, n_actions) {found}, but the "
            f"artifact expects {expected}. Run the coordinator with the env (and n_agents, "
            "env kwargs) the policy was trained on."
        )


# ------------------------------------------------------------------------------- gRPC glue
class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Malformed:
    """What a request that is not a valid protobuf message parses to (answered INVALID_ARGUMENT)."""

    def __init__(self, message: str, error: Exception) -> None:
        self.detail = (
            f"the request is not a valid {message} message of protocol qmix_edge.v1 ({error}); "
            "check the agent speaks qmix_edge.v1 (protos/qmix_edge/runtime/proto/v1/team.proto)"
        )


def _tolerant(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: garbage becomes `_Malformed` for the servicer
    to refuse with INVALID_ARGUMENT (a raising deserializer would be answered INTERNAL)."""

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as e:
            return _Malformed(message_class.DESCRIPTOR.name, e)

    return parse


def _add_team_service(servicer: _TeamServicer, server: grpc.aio.Server) -> None:
    """Register the Team service like the generated `add_TeamServicer_to_server`, but with
    tolerant request parsing."""
    handlers = {
        "Join": grpc.unary_unary_rpc_method_handler(
            servicer.Join,
            request_deserializer=_tolerant(pb.JoinRequest),
            response_serializer=pb.JoinReply.SerializeToString,
        ),
        "Steps": grpc.stream_stream_rpc_method_handler(
            servicer.Steps,
            request_deserializer=_tolerant(pb.AgentMessage),
            response_serializer=pb.CoordinatorMessage.SerializeToString,
        ),
        "Leave": grpc.unary_unary_rpc_method_handler(
            servicer.Leave,
            request_deserializer=_tolerant(pb.LeaveRequest),
            response_serializer=pb.LeaveReply.SerializeToString,
        ),
    }
    generic = grpc.method_handlers_generic_handler("qmix_edge.v1.Team", handlers)
    server.add_generic_rpc_handlers((generic,))


class _TeamServicer(pb_grpc.TeamServicer):
    """Maps the Team service onto a `Coordinator` (grpc.aio); every failure is a status code."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator
        self.malformed: dict[str, str] = {}  # session id -> why its stream was ended

    async def _check_identity(self, context: Any, agent_id: str, what: str) -> None:
        try:
            self.c.auth.check(context, agent_id, what)
        except IdentityError as e:
            log.warning("refused %s: %s (peer %s)", what, e, context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinReply:  # type: ignore[override]
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        await self._check_identity(context, request.agent_id, "a Join")
        try:
            return await self.c.join(request, context.peer())
        except _Refusal as r:
            log.info("refused join of %r: %s %s", request.agent_id[:80], r.code.name, r.detail)
            await context.abort(r.code, r.detail)
            raise  # unreachable: abort raises

    async def Leave(self, request: pb.LeaveRequest, context: Any) -> pb.LeaveReply:  # type: ignore[override]
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        s = self.c._sessions.get(request.session_id)
        if s is not None:
            await self._check_identity(context, s.agent_id, "a Leave")
        await self.c.leave(request.session_id, request.reason)
        return pb.LeaveReply()

    async def Steps(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        if first is grpc.aio.EOF:  # type: ignore[attr-defined]
            return
        if isinstance(first, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, first.detail)
        if first.WhichOneof("kind") != "attach":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message of a Steps stream must be attach(session_id)",
            )
        known = self.c._sessions.get(first.attach.session_id)
        if known is not None:
            await self._check_identity(context, known.agent_id, "a Steps stream")
        try:
            session = self.c.attach(first.attach.session_id, context)
        except _Refusal as r:
            await context.abort(r.code, r.detail)
            raise
        # Sent before the loop runs anything else, so it precedes any step of this session.
        await session.write(self.c.attached_message(session))
        reader = asyncio.ensure_future(self._read(session, context))
        try:
            await session.closed  # set when the session ends, whoever ends it
        finally:
            reader.cancel()
            self.c._forget(session, "disconnected")
        detail = self.malformed.pop(session.id, None)
        if detail is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail)

    async def _read(self, session: _Session, context: Any) -> None:
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                if isinstance(msg, _Malformed):
                    # A broken or hostile client: end its session; the team goes on.
                    log.warning(
                        "agent %s sent a malformed message; session ended", session.agent_id
                    )
                    self.c.counters[session.agent_id].malformed += 1
                    self.malformed[session.id] = msg.detail
                    break
                if msg.WhichOneof("kind") == "step_reply":
                    self.c.on_reply(session, msg.step_reply)
                else:
                    log.warning("agent %s sent a second attach; ignored", session.agent_id)
        except asyncio.CancelledError:
            return
        except Exception as e:  # the stream broke (or was cancelled by the client)
            log.debug("stream of %s ended: %s", session.agent_id, e)
        self.c._forget(session, "disconnected")


class _LaneConnection(asyncio.BufferedProtocol):
    """Maps one step lane connection onto a `Coordinator` session (the lane's twin of
    `_TeamServicer.Steps`, and of Join and Leave for agents without gRPC).

    The first frame either attaches a session joined over gRPC, or joins on the lane itself
    (`Coordinator.join`'s checks; the answer is one join_reply, then the lane is attached). With
    mutual TLS the client certificate must name the session's agent; with tokens, Attach.token or
    JoinRequest.token must be that agent's token (gRPC calls carry it as metadata, checked by the
    interceptor; the lane has no metadata). Then each frame is a StepReply, or a leave. Every
    refusal is one Goodbye REFUSED carrying the status code the Steps stream or the Join rpc
    would end with."""

    # An agent that does not read (stalled, or hostile) is cut off once this much is queued for it.
    WRITE_BUFFER_LIMIT = 1 << 20

    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator
        self.decoder = lane.FrameDecoder(coordinator.config.max_message_bytes)
        self.session: _Session | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._attach_timer: asyncio.TimerHandle | None = None
        self._joining: asyncio.Task[None] | None = None
        self._held: list[bytes] = []  # frames that arrived while a join was being decided
        self._tasks: set[asyncio.Task[None]] = set()  # leaves under way (kept referenced)

    # ---------------------------------------------------------- asyncio.BufferedProtocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = _grpc_style_peer(transport.get_extra_info("peername"))
        self.c._lanes.add(self)
        self._attach_timer = asyncio.get_running_loop().call_later(
            lane.ATTACH_TIMEOUT_S, self._attach_timed_out
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self.decoder.consumed(nbytes)
        except lane.FrameError as e:
            self._refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            return
        self._handle(frames)

    def _handle(self, frames: list[bytes]) -> None:
        for k, body in enumerate(frames):
            if self.transport is None or self.transport.is_closing():
                return
            if self._joining is not None:  # what follows a join waits for its answer
                self._held += frames[k:]
                return
            msg = _PARSE_AGENT_MESSAGE(body)
            if self.session is None:
                self._first(msg)
                continue
            kind = None if isinstance(msg, _Malformed) else msg.WhichOneof("kind")
            if kind == "step_reply":
                self.c.on_reply(self.session, msg.step_reply)
            elif isinstance(msg, _Malformed):
                s = self.session
                log.warning("agent %s sent a malformed lane frame; session ended", s.agent_id)
                self.c.counters[s.agent_id].malformed += 1
                self._refuse(grpc.StatusCode.INVALID_ARGUMENT, msg.detail)
            elif kind == "leave":  # this lane's own session, whatever session_id says
                task = asyncio.ensure_future(self.c.leave(self.session.id, msg.leave.reason))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                log.warning("agent %s sent a second %s; ignored", self.session.agent_id, kind)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._attach_timer is not None:
            self._attach_timer.cancel()
        self.c._lanes.discard(self)
        if self.session is not None:
            self.c._forget(self.session, "disconnected")
        self.transport = None
        self._held = []

    # ------------------------------------------------------------------ the session link
    def send(self, msg: pb.CoordinatorMessage) -> bool:
        """Queue one message for the agent; False when the lane is gone or the agent is not
        reading (then the lane is closed)."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(lane.encode_frame(msg))
        if t.get_write_buffer_size() > self.WRITE_BUFFER_LIMIT:
            log.warning("the step lane of %s is not read; closing it", self.peer)
            self.close()
            return False
        return True

    async def write(self, msg: pb.CoordinatorMessage) -> None:
        """`_Session.write`'s interface (the Steps stream's context has the same)."""
        if not self.send(msg):
            raise ConnectionError("the step lane is closed")

    def close(self) -> None:
        """Close after what is queued was sent (a Goodbye reaches the agent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------ attach and refusals
    def _first(self, msg: Any) -> None:
        """The lane's first frame: attach a session joined over gRPC, or join on the lane."""
        if isinstance(msg, _Malformed):
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, msg.detail)
            return
        kind = msg.WhichOneof("kind")
        if kind == "join":
            req = msg.join
            if self._identity_ok(req.agent_id, req.token, "a Join"):
                assert self.transport is not None
                self.transport.pause_reading()
                self._joining = asyncio.ensure_future(self._join(req))
            return
        if kind != "attach":
            self._refuse(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first frame of a step lane must be attach(session_id) or join(JoinRequest)",
            )
            return
        known = self.c._sessions.get(msg.attach.session_id)
        if known is not None and not self._identity_ok(
            known.agent_id, msg.attach.token, "a step lane"
        ):
            return
        try:
            session = self.c.attach(msg.attach.session_id, self)
        except _Refusal as r:
            self._refuse(r.code, r.detail)
            return
        self._bind(session)
        self.send(self.c.attached_message(session))

    def _identity_ok(self, agent_id: str, token: str, what: str) -> bool:
        """Whether this lane may speak as ``agent_id`` (the token, as gRPC's interceptor checks
        first; then the client certificate); else refuse it and return False."""
        tokens = self.c.tokens
        if tokens is not None and not token_matches(tokens, agent_id, token):
            log.warning("refused %s of %r from %s: bad token", what, agent_id[:80], self.peer)
            self._refuse(
                grpc.StatusCode.UNAUTHENTICATED,
                f"this coordinator requires the bearer token of agent {agent_id[:80]!r} on the step "
                "lane, in Attach.token or JoinRequest.token (qmix-agent --token-file)",
            )
            return False
        if self.c.auth.mutual_tls:
            named = peercert_agent_id(self.transport.get_extra_info("peercert"))  # type: ignore[union-attr]
            if named != agent_id:
                log.warning("refused %s of %r from %s (%r)", what, agent_id[:80], self.peer, named)
                self._refuse(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{what} as agent {agent_id[:80]!r} refused: the client certificate names "
                    f"{f'agent {named[:80]!r}' if named else 'no agent (CN or SAN URI)'}, and an "
                    "agent may only speak as itself",
                )
                return False
        return True

    async def _join(self, req: pb.JoinRequest) -> None:
        """Admit the agent (`Coordinator.join`), answer its join_reply, attach this lane; then
        handle the frames that came meanwhile."""
        try:
            try:
                reply = await self.c.join(req, self.peer, via="lane")
            except _Refusal as r:
                log.info("refused join of %r: %s %s", req.agent_id[:80], r.code.name, r.detail)
                self._refuse(r.code, r.detail)
                return
            except Exception as e:  # a bug here must not leave the lane paused forever
                log.exception("join on the step lane failed")
                self._refuse(grpc.StatusCode.INTERNAL, f"the coordinator failed to join: {e}")
                return
            session = self.c._sessions[reply.session_id]
            if self.transport is None or self.transport.is_closing():  # gone while admitted
                self.c._forget(session, "disconnected")
                return
            reply.step_lane_port = self.c.lane_port
            self.send(pb.CoordinatorMessage(join_reply=reply))  # before any step of the session
            self._bind(self.c.attach(session.id, self))
            self.send(self.c.attached_message(session))
        finally:
            self._joining = None
        held, self._held = self._held, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._handle(held)

    def _bind(self, session: _Session) -> None:
        self.session = session
        if self._attach_timer is not None:
            self._attach_timer.cancel()
            self._attach_timer = None
        session.closed.add_done_callback(lambda _: self.close())

    def _attach_timed_out(self) -> None:
        if self.session is None:
            self._refuse(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no attach within {lane.ATTACH_TIMEOUT_S:.0f} s of connecting",
            )

    def _refuse(self, code: grpc.StatusCode, detail: str) -> None:
        """Answer one Goodbye REFUSED with ``code`` and close; the session (if any) ends."""
        goodbye = pb.Goodbye(
            reason=pb.GOODBYE_REASON_REFUSED, detail=detail, status_code=code.value[0]
        )
        self.send(pb.CoordinatorMessage(goodbye=goodbye))
        self.close()
        if self.session is not None:
            self.c._forget(self.session, "disconnected")


_PARSE_AGENT_MESSAGE = _tolerant(pb.AgentMessage)


def _grpc_style_peer(peername: Any) -> str:
    """A socket peer address as gRPC names its peers ("ipv4:10.0.0.2:5000", "ipv6:[::1]:5000"),
    so records read the same whatever the agent joined on."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return str(peername)


# ------------------------------------------------------------------------------------- the CLI
DESCRIPTION = f"""\
Serve one team: agents (qmix-agent) dial in, join with their artifact hash, and the
coordinator keeps them in step. Simulation mode runs the environment here and sends
each agent its own observation; field mode paces a real team and records reports.

example:
  qmix-coordinator --artifacts artifacts/run1 --episodes 10 --port 50051 \\
      --record runs/run1/episodes.jsonl

exit status: 0 the run finished (or was stopped) with its whole team; 1 runtime
failure (e.g. the environment raised in {ENV_ERROR_LIMIT} consecutive episodes); 2 usage or
configuration error; {EXIT_INCOMPLETE_TEAM} the run ended but a seat was never filled or no agent
ever decided (the last lines name the agents that never joined).
"""


def build_parser() -> argparse.ArgumentParser:
    """qmix-coordinator's flags: the fields of `CoordinatorConfig`."""
    return settings.build_parser(
        CoordinatorConfig, "qmix-coordinator", DESCRIPTION, titles=CONFIG_GROUPS
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, _ = settings.parse(CoordinatorConfig, build_parser(), argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    config = args
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tls, tokens = server_security(args)
        team = TeamSpec.from_artifacts(args.artifacts, public_key=args.public_key)
        try:
            env = (
                make_team_env(team, args.env, args.episode_limit)
                if config.mode == "simulation"
                else None
            )
        except TeamMismatchError as e:
            _refuse_an_edited_manifest(args.artifacts, team, args.public_key, e)
            raise
        coordinator = Coordinator(
            team, config, env=env, record_path=args.record, tls=tls, tokens=tokens
        )
    except Exception as e:  # config, artifact and env errors are the user's to fix
        log.error("%s: %s", type(e).__name__, e)
        return 2
    try:
        port = coordinator.start(args.address)
    except RuntimeFailure as e:
        log.error("%s", e)
        return 1
    if args.port_file:
        _write_port_file(Path(args.port_file), port)
    if args.step_lane_port_file and coordinator.lane_port:
        _write_port_file(Path(args.step_lane_port_file), coordinator.lane_port)
    stop_handler = _install_signal_handlers(coordinator.request_stop)
    try:
        summary = coordinator.run()
    except Exception:
        log.exception("the coordinator failed")
        return 1
    finally:
        coordinator.close()
        stop_handler()
    for line in summary_lines(summary, args.record):
        log.log(logging.INFO if summary.exit_status == EXIT_OK else logging.ERROR, "%s", line)
    return summary.exit_status


def summary_lines(summary: RunSummary, record: str | None = None) -> list[str]:
    """What a run did, for the last lines of qmix-coordinator: the outcome first (episodes and
    their mean return, none when no episode ended here), then who never joined, the episodes
    played with an empty seat, the invalid replies per agent, and the record written, if any."""
    played = [e for e in summary.episodes if e.get("reason") != "stopped"]
    returns = [e["return"] for e in played]
    outcome = "failed" if summary.failure else "finished" if summary.finished else "stopped"
    counts = f"{summary.team_steps} team steps in the run, {summary.decisions} agent decisions"
    lines = [
        f"{outcome} after {len(played)} episodes here "
        f"(mean return {sum(returns) / len(returns):.4f}), {counts}"
        if returns
        else f"{outcome} before any episode ended here, {counts}"
    ]
    if summary.failure:
        lines.append(summary.failure)
    if summary.never_joined:
        lines.append(
            f"never joined: {', '.join(summary.never_joined)} (their seats stayed empty: every "
            "action of theirs was the legal-action rule's; start their qmix-agent, or raise "
            "--team-wait-s)"
        )
    elif summary.exit_status == EXIT_INCOMPLETE_TEAM:
        lines.append("no agent ever decided: every applied action was the legal-action rule's")
    if summary.incomplete_team_episodes:
        lines.append(
            f"{summary.incomplete_team_episodes} of {len(played)} episodes were played with an "
            "incomplete team (see each episode_end's 'absent' in the record)"
        )
    env_errors = sum(1 for e in played if e.get("reason") == "env_error")
    if env_errors:
        lines.append(f"{env_errors} episodes ended by an environment error (reason env_error)")
    invalid = {a: c.invalid_actions for a, c in summary.counters.items() if c.invalid_actions}
    if invalid:
        lines.append(
            "invalid replies (out of range or masked; replaced): "
            + ", ".join(f"{a} {k}" for a, k in invalid.items())
        )
    if summary.exit_status == EXIT_INCOMPLETE_TEAM:
        lines.append(f"exit status {EXIT_INCOMPLETE_TEAM}: the run did not have its whole team")
    if record:
        lines.append(f"run record appended to {record}")
    return lines


def _check_port_free(address: str) -> None:
    """Raise `RuntimeFailure` when no address ``address`` resolves to can be bound (a port in use):
    our message alone on the user's terminal, not gRPC's C-core log line before it. Like gRPC,
    one bindable address of several is enough; port 0 always is."""
    host, _, port_text = address.rpartition(":")
    if not port_text.isdigit() or int(port_text) == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None,
            int(port_text),
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except OSError:
        return  # an unresolvable host is gRPC's to report
    first: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC's listener
            try:
                sock.bind(sockaddr)
                return
            except OSError as e:
                first = first or e
    if first is not None:
        raise RuntimeFailure(
            f"cannot bind {address}: the port is in use or not permitted ({first.strerror}). "
            "Stop the other server or choose another --port (0 = any free port)."
        ) from first


def _refuse_an_edited_manifest(
    artifacts: str, team: TeamSpec, public_key: Any, cause: Exception
) -> None:
    """When the env disagrees with manifest.json, the manifest may be what is wrong: load each
    agent's graph (hash, the mirror of the manifest it was exported with) so an edited manifest
    is named as such, instead of advice to change the env."""
    from ..artifact import ArtifactError
    from ..policy import AgentPolicy

    for agent in team.agents:
        try:
            AgentPolicy.load(artifacts, agent.agent_id, public_key=public_key)
        except ArtifactError as e:
            raise e from cause


def _write_port_file(path: Path, port: int) -> None:
    """Write ``port`` and a newline atomically (a reader never sees a half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


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


if __name__ == "__main__":
    sys.exit(main())
