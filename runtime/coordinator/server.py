"""The coordinator's lifecycle: one `Coordinator` object owns the event loop thread, the gRPC
server (Team service and grpc.health.v1), the step lane, the step clock and the run record, from
`start` through `run` to `close`.

The gRPC server (grpc.aio) and the step clock share one asyncio event loop in a background
thread, so a step costs no thread hand-offs in this process. Graceful stop (`request_stop`, e.g.
on SIGTERM): health NOT_SERVING, the step in flight finishes, the episode is recorded as stopped,
agents get Goodbye SHUTDOWN. Ports are never shared silently.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .. import wire
from ..errors import RuntimeFailure, TeamMismatchError
from ..interceptor import TokenInterceptor
from ..proto.v1 import team_pb2 as pb
from ..proto.v1.mission_pb2_grpc import add_MissionServicer_to_server
from ..records import resume_point
from ..rollout import artifact_version
from ..security import SecurityConfigError, ServerTls, host_of
from .authorize import Authority
from .clock import StepClock
from .config import CoordinatorConfig, step_lane_port
from .grpc_service import TeamServicer, add_team_service
from .lane_server import LaneServer
from .mission import MissionControl
from .mission_run import MissionResume, MissionRun, MissionSummary, mission_resume_point
from .mission_service import MissionServicer
from .record import Recorder
from .sessions import Session, Sessions
from .sources import FieldSource, SimulatedSource, StepSource
from .summary import AgentCounters, RunSummary
from .team import TeamSpec, check_env_matches

log = logging.getLogger(__name__)


class Coordinator:
    """One team's coordinator: sessions, step clock, records, and the servers they are reached by.

    The public methods are synchronous and thread-safe: `start`, `run` (blocks until the run
    ends), `request_stop`, `close`, and the observers `live_agents`, `attached_agents`,
    `session_agent`, `wait_until`. Simulation: pass ``env`` (a `qmix_edge.envs.TeamEnv` whose agents match
    ``team``).
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
        operator_token: str | None = None,
    ) -> None:
        """``tls``: serve over TLS (mutual TLS when it has a client CA: agent certificates name
        their agent id). ``tokens``: agent id -> bearer token, required on every call.
        ``operator_token``: mission mode, what qmix-deploy and qmix-mission must present (None:
        they are served to loopback callers only)."""
        self.team = team
        self.config = config
        self.tls = tls
        self.authority = Authority(
            team.agent_ids, mutual_tls=tls is not None and tls.mutual, tokens=tokens
        )
        self.tokens = self.authority.tokens
        self.env = env
        source: StepSource
        if config.mode == "simulation":
            if env is None:
                raise TeamMismatchError("simulation mode needs an environment; pass env=...")
            check_env_matches(team, env)
            source = SimulatedSource(env)
        else:
            source = FieldSource(team.agent_ids)
        self.instance = uuid.uuid4().hex[:12]
        self.episode_limit = int(config.episode_limit or (env.spec.episode_limit if env else 0))
        self.port: int | None = None
        """The bound gRPC port once started."""
        record_path = record_path if record_path is not None else config.record
        self.recorder = Recorder(record_path)
        self._start_index, team_step = (
            resume_point(self.recorder.path)
            if config.resume and self.recorder.path is not None
            else (0, 0)
        )
        self.mission: MissionControl | None = None
        """Mission mode: the team's schedule, telemetry, records and rollouts."""
        self.operator_token = operator_token
        if config.mode == "mission":
            resume = (
                mission_resume_point(self.recorder.path)
                if config.resume and self.recorder.path is not None
                else MissionResume()
            )
            self._start_index = resume.next_index
            self.mission = MissionControl(
                team.team_id,
                team.agent_ids,
                resume.version or artifact_version(config.artifacts),
                record=self.recorder.write,
                first_episode=self._start_index + 1,
                record_next_seq=resume.record_next_seq,
            )
        self._stopping = threading.Event()
        self._stop_event = asyncio.Event()
        self._watchers = threading.Condition()
        self.sessions = Sessions(
            team,
            config,
            instance=self.instance,
            episode_limit=self.episode_limit,
            recorder=self.recorder,
            stopping=self._stopping,
        )
        self.sessions.on_change(self._notify_watchers)
        self.clock = StepClock(
            team,
            config,
            self.sessions,
            source,
            self.recorder,
            episode_limit=self.episode_limit,
            start_index=self._start_index,
            team_step=team_step,
            stop_event=self._stop_event,
            stop=self._stop_now,
            on_step=self._notify_watchers,
        )
        self.lane = LaneServer(
            self.sessions,
            self.clock,
            self.authority,
            max_message_bytes=config.max_message_bytes,
            tls=tls,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="coordinator-loop"
        )
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._server: grpc.aio.Server | None = None

    # -------------------------------------------------------------------------- observers
    @property
    def counters(self) -> dict[str, AgentCounters]:
        """Per-agent counters of this process (changed on the coordinator's loop)."""
        return self.sessions.counters

    @property
    def lane_port(self) -> int:
        """The step lane's bound port once started (0: no lane)."""
        return self.lane.port

    @property
    def record_path(self) -> Path | None:
        """The run record this coordinator appends to, if any."""
        return self.recorder.path

    @property
    def team_steps(self) -> int:
        """Team steps of the run so far (a resumed run counts its earlier processes')."""
        return self.clock.team_step

    @property
    def stopping(self) -> bool:
        """A stop was requested: new Joins are refused (UNAVAILABLE)."""
        return self._stopping.is_set()

    def live_agents(self) -> tuple[str, ...]:
        """The agents holding their seat now (joined, session not over), in team order."""
        return self.sessions.live_agents()

    def attached_agents(self) -> tuple[str, ...]:
        """The agents whose session has attached its step carrier (they are sent steps)."""
        return self.sessions.live_agents(attached=True)

    def session_agent(self, session_id: str) -> str | None:
        """The agent whose session ``session_id`` is, while that session lasts; else None."""
        s: Session | None = self.sessions.get(session_id)
        return s.agent_id if s is not None else None

    def wait_until(self, condition: Callable[[Coordinator], bool], timeout: float) -> bool:
        """Block until ``condition(self)`` holds, re-checked whenever a seat changes and after
        every team step; False if it still does not after ``timeout`` seconds."""
        with self._watchers:
            return self._watchers.wait_for(lambda: condition(self), timeout)

    def _notify_watchers(self) -> None:
        with self._watchers:
            self._watchers.notify_all()

    # ---------------------------------------------------------------------------- serving
    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the coordinator's loop from any other thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, address: str | None = None) -> int:
        """Bind ``address`` (default: the config's ``host:port``; port 0 = any free port), start
        serving, return the bound port. The step lane binds the config's ``step_lane_port``
        (none = this port + 1, or any free port when this one is 0).

        Raises `RuntimeFailure` when the address cannot be bound (in use: ports are never shared).
        """
        if self._server is not None:
            raise RuntimeFailure("this coordinator is already serving; start() it once")
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
        self.recorder.open()
        self.recorder.write(
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
        max_bytes = self.config.max_message_bytes
        server = grpc.aio.server(
            interceptors=[TokenInterceptor(self.tokens)] if self.tokens else None,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ],
        )
        add_team_service(TeamServicer(self.sessions, self.clock, self.authority), server)
        if self.mission is not None:
            add_MissionServicer_to_server(
                MissionServicer(
                    self.mission,
                    self.authority,
                    self.operator_token,
                    default_lead_s=self.config.start_lead_ms / 1000.0,
                ),
                server,
            )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        check_port_free(address)  # before gRPC, whose C core prints its own bind error
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
        if self.config.step_lane and self.mission is None:  # mission mode has no steps
            try:
                lane_port = step_lane_port(
                    int(address.rpartition(":")[2]), self.config.step_lane_port
                )
                self.sessions.lane_port = await self.lane.start(host_of(address), lane_port)
            except BaseException:
                await server.stop(0)
                raise
        await server.start()
        for name in ("", wire.HEALTH_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return port

    def run(self) -> RunSummary | MissionSummary:
        """Run the configured episodes (or until `request_stop`); blocks; returns what happened
        (a `MissionSummary` in mission mode)."""
        if self._server is None:
            raise RuntimeFailure("call start() before run()")
        if self.mission is not None:
            mission = MissionRun(
                self.mission,
                self.config,
                self.recorder,
                self._stop_event,
                first_index=self._start_index,
            )
            done: MissionSummary = self._call(mission.run())
            return done
        summary: RunSummary = self._call(self.clock.run())
        return summary

    def request_stop(self) -> None:
        """Begin a graceful stop: health NOT_SERVING, the step in flight finishes, `run` returns.

        Safe from any thread and from signal handlers."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("stop requested: finishing the step in flight")
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._stop_in_loop()))

    async def _stop_now(self) -> None:
        """`request_stop` from the loop itself, done before returning (``--stop-after-steps``)."""
        self.request_stop()
        await self._stop_in_loop()

    async def _stop_in_loop(self) -> None:
        self._stop_event.set()
        self.sessions.changed.set()
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
        self.recorder.close()

    async def _close(self, grace_s: float) -> None:
        await self._stop_in_loop()
        await self.sessions.end_all(goodbye=pb.GOODBYE_REASON_SHUTDOWN, detail="coordinator closed")
        self.lane.close()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None


def check_port_free(address: str) -> None:
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
