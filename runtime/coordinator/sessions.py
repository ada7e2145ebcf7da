"""Sessions: who holds which seat. The one place a Join is decided (`Sessions.join`), and where a
joined agent attaches its step carrier, leaves, or is dropped.

A `Session` is one joined agent; once attached it has a `Link` (the gRPC Steps stream's context,
or a step lane connection) that messages are written to. The carriers (`grpc_service`,
`lane_server`) and the step clock talk to `Sessions` through its public methods only. Everything
here runs on the coordinator's event loop.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal, Protocol

import grpc

from .. import wire
from ..errors import RuntimeFailure
from ..proto.v1 import team_pb2 as pb
from .config import CoordinatorConfig
from .record import Recorder
from .summary import AgentCounters
from .team import TeamSpec

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Carrier = Literal["stream", "lane"]


class Refusal(RuntimeFailure):
    """A request the coordinator refuses, with the gRPC status code to answer (the step lane
    sends the same code in its Goodbye REFUSED)."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Link(Protocol):
    """Where an attached session's messages go (a Steps stream's context, a lane connection)."""

    async def write(self, msg: pb.CoordinatorMessage) -> None: ...


class LaneLink(Link, Protocol):
    """A step lane connection: it also queues a message without awaiting (a buffered write)."""

    def send(self, msg: pb.CoordinatorMessage) -> bool: ...


class Session:
    """One joined agent. Lives on the coordinator's event loop; its carrier writes for it."""

    def __init__(self, agent_index: int, agent_id: str, client_name: str) -> None:
        self.id = uuid.uuid4().hex
        self.agent_index = agent_index
        self.agent_id = agent_id
        self.client_name = client_name
        self.created = time.monotonic()
        self.link: Link | None = None
        """Once attached: where this session's messages go."""
        self.lane: LaneLink | None = None
        """The step lane connection this session steps on, if it does."""
        self.ended = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._write_lock = asyncio.Lock()
        self.step_message: pb.CoordinatorMessage | None = None
        """This seat's StepRequest, reused from step to step by the step clock."""

    @property
    def attached(self) -> bool:
        return self.link is not None

    async def write(self, msg: pb.CoordinatorMessage) -> bool:
        """Send one message on the session's link; False when the link is gone."""
        if self.link is None or self.ended:
            return False
        try:
            async with self._write_lock:
                await self.link.write(msg)
            return True
        except Exception as e:  # a broken stream: the read side ends the session
            log.debug("write to %s failed: %s", self.agent_id, e)
            return False


class Sessions:
    """The team's seats and the sessions holding them."""

    def __init__(
        self,
        team: TeamSpec,
        config: CoordinatorConfig,
        *,
        instance: str,
        episode_limit: int,
        recorder: Recorder,
        stopping: threading.Event,
    ) -> None:
        self.team = team
        self.config = config
        self.instance = instance
        self.episode_limit = episode_limit
        self.recorder = recorder
        self.stopping = stopping
        self.counters = {a.agent_id: AgentCounters() for a in team.agents}
        self.live: dict[int, Session] = {}
        """Seat index -> the session holding it (read by the step clock; changed here only)."""
        self.lane_port = 0
        """The step lane's bound port, told to agents that ask for it (0: no lane)."""
        self.current_episode = 0
        """The episode id in play (set by the step clock), told in JoinReply and Attached."""
        self.changed = asyncio.Event()
        """Set whenever a seat is taken, attached or freed (the step clock's team wait)."""
        self._by_id: dict[str, Session] = {}
        self._ever_joined: set[int] = set()
        self._on_end: list[Callable[[Session], None]] = []
        self._on_change: list[Callable[[], None]] = []

    # ------------------------------------------------------------------------------ queries
    def get(self, session_id: str) -> Session | None:
        """The session ``session_id`` while it lasts, else None."""
        return self._by_id.get(session_id)

    def all(self) -> list[Session]:
        return list(self._by_id.values())

    def live_agents(self, *, attached: bool = False) -> tuple[str, ...]:
        """The agents holding their seat now (``attached``: and stepping), in team order. Safe
        from other threads (one atomic copy of the seats)."""
        held = sorted(list(self.live.values()), key=lambda s: s.agent_index)
        return tuple(s.agent_id for s in held if s.attached or not attached)

    def attached_count(self) -> int:
        return sum(1 for s in self.live.values() if s.attached)

    def ever_joined(self, index: int) -> bool:
        return index in self._ever_joined

    def on_end(self, callback: Callable[[Session], None]) -> None:
        """Call ``callback(session)`` (on the loop) whenever a session ends."""
        self._on_end.append(callback)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the loop) whenever a seat is taken, attached or freed."""
        self._on_change.append(callback)

    # -------------------------------------------------------------------------- the Join
    async def join(self, req: pb.JoinRequest, peer: str, *, via: str = "grpc") -> pb.JoinReply:
        """Admit one agent or raise `Refusal` with the status code to answer. ``via``: what the
        Join came on ("grpc", or "lane": the step lane's join frame), for the record."""
        if self.stopping.is_set():
            raise Refusal(grpc.StatusCode.UNAVAILABLE, "the coordinator is shutting down")
        if self.config.mode == "mission":
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this coordinator is mission control (--mode mission): its agents run their own "
                "loops and link to it with qmix-agent --rate-hz R --coordinator HOST:PORT, not "
                "by joining lockstep steps",
            )
        if req.protocol_version != wire.PROTOCOL_VERSION:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {req.protocol_version} is not spoken here; this coordinator "
                f"speaks {wire.PROTOCOL_VERSION} (qmix_edge.v1, protos/PROTOCOL.md). Upgrade the "
                "agent.",
            )
        if not req.agent_id:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "agent_id is empty")
        if not _SHA256.match(req.artifact_sha256):
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"artifact_sha256 must be 64 lowercase hex digits; found {req.artifact_sha256[:80]!r}",
            )
        team = self.team
        index = team.index(req.agent_id)
        if index is None:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"agent {req.agent_id[:80]!r} is not in team {team.team_id}; its agents are "
                f"{list(team.agent_ids)}",
            )
        slot = team.agents[index]
        if req.artifact_sha256 not in slot.sha256s:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {slot.agent_id!r} runs artifact {req.artifact_sha256[:12]}..., but team "
                f"{team.team_id} expects {sorted(h[:12] + '...' for h in slot.sha256s)}: the "
                "agent was exported from another run or another export. Copy the coordinator's "
                "artifact directory to the device.",
            )
        old = self.live.get(index)
        if old is not None:
            stale = not old.attached and (
                time.monotonic() - old.created > self.config.attach_timeout_s
            )
            if not stale:
                raise Refusal(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"agent {slot.agent_id!r} already has a live session (from "
                    f"{old.client_name or 'unknown'}); stop it first or wait for its lease "
                    "to expire",
                )
            await self.end(old, goodbye=None, detail="superseded")
        session = Session(index, slot.agent_id, req.client_name[:200])
        rejoin = index in self._ever_joined
        self._ever_joined.add(index)
        self.live[index] = session
        self._by_id[session.id] = session
        c = self.counters[slot.agent_id]
        c.joins += 1
        c.rejoins += int(rejoin)
        self.recorder.write(
            "join",
            agent_id=slot.agent_id,
            session_id=session.id,
            client_name=session.client_name,
            peer=peer,
            via=via,
            rejoin=rejoin,
        )
        self._changed()
        log.info("agent %s joined (%s, %s)", slot.agent_id, session.client_name, peer)
        cfg = self.config
        return pb.JoinReply(
            session_id=session.id,
            team_id=team.team_id,
            coordinator_instance=self.instance,
            mode=pb.MODE_SIMULATION if cfg.mode == "simulation" else pb.MODE_FIELD,
            agent_index=index,
            n_agents=len(team.agents),
            fallback_action=slot.fallback_action,
            step_deadline_ms=cfg.step_deadline_ms,
            lease_steps=cfg.lease_steps,
            step_period_ms=cfg.step_period_ms,
            episode_limit=self.episode_limit,
            obs_dim=slot.obs_dim,
            n_actions=slot.n_actions,
            current_episode_id=self.current_episode,
            step_lane_port=self.lane_port if req.step_lane else 0,
        )

    # ------------------------------------------------------------------- attach and leave
    def attach(self, session_id: str, link: Link, carrier: Carrier) -> Session:
        """Give session ``session_id`` its step carrier, or raise `Refusal`."""
        s = self._by_id.get(session_id)
        if s is None or s.ended:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"session {session_id[:40]!r} is unknown or over; Join again",
            )
        if s.attached:
            raise Refusal(grpc.StatusCode.ALREADY_EXISTS, "this session already has a Steps stream")
        s.link = link
        if carrier == "lane":
            s.lane = link  # type: ignore[assignment]
        self._changed()
        self.recorder.write("attach", agent_id=s.agent_id, session_id=s.id, carrier=carrier)
        return s

    def attached_message(self, s: Session) -> pb.CoordinatorMessage:
        """The acknowledgement of ``s``'s attach, which its carrier sends before anything else."""
        return pb.CoordinatorMessage(
            attached=pb.Attached(
                session_id=s.id,
                current_episode_id=self.current_episode,
                agents_attached=self.attached_count(),
                n_agents=len(self.team.agents),
            )
        )

    async def leave(self, session_id: str, reason: str) -> None:
        """The agent of ``session_id`` says it leaves (unknown ids are ignored)."""
        s = self._by_id.get(session_id)
        if s is not None:
            await self.end(s, goodbye=None, detail=f"left: {reason[:200]}")

    async def end(self, s: Session, *, goodbye: int | None, detail: str) -> None:
        """End ``s``, first telling its agent ``goodbye`` (a GoodbyeReason) when given."""
        if s.ended:
            return
        if goodbye is not None:
            await s.write(pb.CoordinatorMessage(goodbye=pb.Goodbye(reason=goodbye, detail=detail)))  # type: ignore[arg-type]
        self.forget(s, detail)

    async def end_all(self, *, goodbye: int, detail: str) -> None:
        await asyncio.gather(*(self.end(s, goodbye=goodbye, detail=detail) for s in self.all()))

    def disconnected(self, s: Session) -> None:
        """``s``'s carrier is gone (the agent closed it, or it broke)."""
        self.forget(s, "disconnected")

    def count_malformed(self, s: Session) -> None:
        """``s`` sent bytes that are no message (its carrier ends the session)."""
        self.counters[s.agent_id].malformed += 1

    def forget(self, s: Session, detail: str) -> None:
        """Drop a session (synchronously, on the loop) and wake whoever waits on it."""
        if s.ended:
            return
        s.ended = True
        self._by_id.pop(s.id, None)
        if self.live.get(s.agent_index) is s:
            del self.live[s.agent_index]
        if detail == "disconnected":
            self.counters[s.agent_id].disconnects += 1
        for callback in self._on_end:
            callback(s)
        self._changed()
        if not s.closed.done():
            s.closed.set_result(None)
        self.recorder.write("leave", agent_id=s.agent_id, session_id=s.id, reason=detail)
        log.info("agent %s session ended: %s", s.agent_id, detail)

    def _changed(self) -> None:
        self.changed.set()
        for callback in self._on_change:
            callback()
