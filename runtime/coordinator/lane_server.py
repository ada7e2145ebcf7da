"""The step lane's server side: one `LaneConnection` per TCP (or TLS) connection, mapped onto
`Sessions`, the identity rule (`Authority.authorize`) and the step clock's `accept` -- the lane's
twin of the gRPC Steps stream, and of Join and Leave for agents without gRPC.

The first frame either attaches a session joined over gRPC, or joins on the lane itself (the
same `Sessions.join`; the answer is one join_reply, then the lane is attached). Tokens travel in
Attach.token or JoinRequest.token (the lane has no metadata). Then each frame is a StepReply, or
a leave. Every refusal is one Goodbye REFUSED carrying the status code the Steps stream or the
Join rpc would end with. The framing is `qmix_edge.runtime.lane`'s.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import grpc

from .. import lane
from ..errors import RuntimeFailure
from ..proto.v1 import team_pb2 as pb
from ..security import ServerTls, peercert_agent_id
from .authorize import Authority, Credentials
from .clock import StepClock
from .grpc_service import Malformed, tolerant
from .sessions import Refusal, Session, Sessions

log = logging.getLogger(__name__)

_PARSE_AGENT_MESSAGE = tolerant(pb.AgentMessage.FromString, pb.AgentMessage.DESCRIPTOR.name)


class LaneServer:
    """The listening step lane and its open connections."""

    def __init__(
        self,
        sessions: Sessions,
        clock: StepClock,
        authority: Authority,
        *,
        max_message_bytes: int,
        tls: ServerTls | None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.authority = authority
        self.max_message_bytes = max_message_bytes
        self.tls = tls
        self.port = 0
        """The bound port once started."""
        self.connections: set[LaneConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host`` (the gRPC host), on one address only so a port-0 lane has one port
        to tell; a port in use fails loudly (`RuntimeFailure`), as gRPC's does."""
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
        self._server = await asyncio.get_running_loop().create_server(
            lambda: LaneConnection(self),
            sock=sock,
            ssl=ssl_ctx,
            # A connection that never finishes its handshake is dropped as one that never attaches.
            ssl_handshake_timeout=lane.ATTACH_TIMEOUT_S if ssl_ctx is not None else None,
        )
        self.port = int(sock.getsockname()[1])
        log.info("step lane on %s:%d (%s)", host, self.port, "TLS" if ssl_ctx else "plain")
        return self.port

    def close(self) -> None:
        """Stop listening and close every connection (after what is queued on it was sent)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.close()


class LaneConnection(asyncio.BufferedProtocol):
    """One step lane connection: attaches (or joins) one session, then carries its steps."""

    # An agent that does not read (stalled, or hostile) is cut off once this much is queued for it.
    WRITE_BUFFER_LIMIT = 1 << 20

    def __init__(self, server: LaneServer) -> None:
        self.server = server
        self.sessions = server.sessions
        self.decoder = lane.FrameDecoder(server.max_message_bytes)
        self.session: Session | None = None
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
        self.peer = grpc_style_peer(transport.get_extra_info("peername"))
        self.server.connections.add(self)
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
            kind = None if isinstance(msg, Malformed) else msg.WhichOneof("kind")
            if kind == "step_reply":
                self.server.clock.accept(self.session, msg.step_reply)
            elif isinstance(msg, Malformed):
                s = self.session
                log.warning("agent %s sent a malformed lane frame; session ended", s.agent_id)
                self.sessions.count_malformed(s)
                self._refuse(grpc.StatusCode.INVALID_ARGUMENT, msg.detail)
            elif kind == "leave":  # this lane's own session, whatever session_id says
                task = asyncio.ensure_future(self.sessions.leave(self.session.id, msg.leave.reason))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                log.warning("agent %s sent a second %s; ignored", self.session.agent_id, kind)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._attach_timer is not None:
            self._attach_timer.cancel()
        self.server.connections.discard(self)
        if self.session is not None:
            self.sessions.disconnected(self.session)
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
        """The `Link` interface (a Steps stream's context has the same)."""
        if not self.send(msg):
            raise ConnectionError("the step lane is closed")

    def close(self) -> None:
        """Close after what is queued was sent (a Goodbye reaches the agent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------ attach and refusals
    def _first(self, msg: Any) -> None:
        """The lane's first frame: attach a session joined over gRPC, or join on the lane."""
        if isinstance(msg, Malformed):
            self._refuse(grpc.StatusCode.INVALID_ARGUMENT, msg.detail)
            return
        kind = msg.WhichOneof("kind")
        if kind == "join":
            req = msg.join
            if self._authorized(req.agent_id, req.token, "a Join"):
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
        known = self.sessions.get(msg.attach.session_id)
        if known is not None and not self._authorized(
            known.agent_id, msg.attach.token, "a step lane"
        ):
            return
        try:
            session = self.sessions.attach(msg.attach.session_id, self, "lane")
        except Refusal as r:
            self._refuse(r.code, r.detail)
            return
        self._bind(session)
        self.send(self.sessions.attached_message(session))

    def _authorized(self, agent_id: str, token: str, what: str) -> bool:
        """Whether this lane may speak as ``agent_id``; else refuse it and return False."""
        authority = self.server.authority
        cert = None
        if authority.mutual_tls and self.transport is not None:
            cert = peercert_agent_id(self.transport.get_extra_info("peercert"))
        try:
            authority.authorize(Credentials(self.peer, cert, token or None), agent_id, what)
        except Refusal as r:
            self._refuse(r.code, r.detail)
            return False
        return True

    async def _join(self, req: pb.JoinRequest) -> None:
        """Admit the agent (`Sessions.join`), answer its join_reply, attach this lane; then
        handle the frames that came meanwhile."""
        try:
            try:
                reply = await self.sessions.join(req, self.peer, via="lane")
            except Refusal as r:
                log.info("refused join of %r: %s %s", req.agent_id[:80], r.code.name, r.detail)
                self._refuse(r.code, r.detail)
                return
            except Exception as e:  # a bug here must not leave the lane paused forever
                log.exception("join on the step lane failed")
                self._refuse(grpc.StatusCode.INTERNAL, f"the coordinator failed to join: {e}")
                return
            session = self.sessions.get(reply.session_id)
            assert session is not None  # just admitted, on this loop
            if self.transport is None or self.transport.is_closing():  # gone while admitted
                self.sessions.disconnected(session)
                return
            reply.step_lane_port = self.server.port
            self.send(pb.CoordinatorMessage(join_reply=reply))  # before any step of the session
            self._bind(self.sessions.attach(session.id, self, "lane"))
            self.send(self.sessions.attached_message(session))
        finally:
            self._joining = None
        held, self._held = self._held, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
            self._handle(held)

    def _bind(self, session: Session) -> None:
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
            self.sessions.disconnected(self.session)


def grpc_style_peer(peername: Any) -> str:
    """A socket peer address as gRPC names its peers ("ipv4:10.0.0.2:5000", "ipv6:[::1]:5000"),
    so records read the same whatever the agent joined on."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return str(peername)
