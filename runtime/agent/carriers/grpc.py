"""qmix-agent's gRPC carrier: Join and Leave over gRPC, steps on the lane or the Steps stream.

Owns one agent's sessions with a coordinator it reaches at its gRPC port: the Join rpc (with the
bearer token as call metadata), then the step exchange on the coordinator's step lane when the
Join offers one (`LaneExchange`, on a thread of its own with a blocking socket) or else
on the Steps stream (grpc.aio: receiving a step, deciding and replying on one thread), and the
Leave rpc when the agent stops. One event loop serves every session of the carrier's life.

Loaded only by agents that dial gRPC: an agent on the step lane alone never imports this module,
nor grpc. Must not import torch (nor qmix_edge.train / qmix_edge.export).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from ...errors import JoinRefused
from ...lane import LaneClient
from ...proto.v1 import team_pb2 as pb
from ...proto.v1 import team_pb2_grpc as pb_grpc
from ...security import host_of, token_metadata
from .contract import FINISHED, SERVED, STOPPED, Link, SessionHost, SessionOutcome, failed
from .lane import LaneExchange

log = logging.getLogger(__name__)


# A Join that failed with one of these never reached a coordinator that could answer it: an
# outcome to retry, not a refusal.
_UNREACHED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def _code(e: grpc.RpcError) -> grpc.StatusCode:
    return e.code()  # type: ignore[attr-defined,no-any-return]


def _outcome(e: grpc.RpcError) -> SessionOutcome:
    """A failed call as a session outcome (logged, then retried)."""
    return failed(f"{_code(e).name}: {e.details()}")  # type: ignore[attr-defined]


class GrpcCarrier:
    """`Carrier` over the coordinator's gRPC port ``target``."""

    def __init__(self, host: SessionHost, link: Link, target: str) -> None:
        self.host = host
        self.link = link
        self.target = target
        self.exchange = LaneExchange(host, link)
        self._credentials = link.tls.credentials() if link.tls is not None else None
        self._metadata = token_metadata(link.agent_id, link.token) if link.token else None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Future[SessionOutcome] | None = None  # the session under way
        self._call: Any = None  # its Steps stream, if it steps there
        self._joined: tuple[Any, str] | None = None  # (stub, session id) while joined
        self._leaving: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------------ the Carrier
    @property
    def lane(self) -> LaneClient | None:
        return self.exchange.lane

    def session(self) -> SessionOutcome:
        return self._loop.run_until_complete(self._session_task())

    def stop(self) -> None:
        loop = self._loop
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closing meanwhile
                loop.call_soon_threadsafe(self._cancel_session)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        leaving = self._leaving
        if leaving is not None and not leaving.done():  # a Leave under way (at most ~1 s more)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                self._loop.run_until_complete(leaving)
        self._loop.close()

    # ------------------------------------------------------------------------- stopping
    async def _session_task(self) -> SessionOutcome:
        self._task = asyncio.ensure_future(self._session())
        try:
            return await self._task
        except asyncio.CancelledError:
            return STOPPED
        finally:
            self._task = None

    def _cancel_session(self) -> None:
        if self._joined is not None:  # say goodbye first, so the seat is freed as "left"
            stub, session_id = self._joined
            self._leaving = asyncio.ensure_future(self._leave_then_break(stub, session_id))
        elif self._task is not None:  # not joined yet (dialing, or waiting for the Join)
            self._task.cancel()

    async def _leave_then_break(self, stub: Any, session_id: str) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):  # cancelled: channel closed
            await asyncio.wait_for(self._leave(stub, session_id, "agent stopping"), 1.0)
        if self._call is not None:
            self._call.cancel()
        lane = self.exchange.lane
        if lane is not None:
            lane.interrupt()

    async def _leave(self, stub: Any, session_id: str, reason: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            await stub.Leave(
                pb.LeaveRequest(session_id=session_id, reason=reason),
                timeout=1.0,
                metadata=self._metadata,
            )

    # -------------------------------------------------------------------------- a session
    async def _session(self) -> SessionOutcome:
        host, link = self.host, self.link
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", link.max_message_bytes),
            ("grpc.max_send_message_length", link.max_message_bytes),
        ]
        if self._credentials is not None and link.tls is not None:
            options += link.tls.channel_options()
            channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=options)
        async with channel:
            stub = pb_grpc.TeamStub(channel)  # type: ignore[no-untyped-call]
            try:
                reply = await stub.Join(
                    host.join_request(), timeout=link.join_timeout_s, metadata=self._metadata
                )
            except grpc.RpcError as e:
                if _code(e) in _UNREACHED:
                    return _outcome(e)
                raise JoinRefused(_code(e).value[0], e.details() or "") from e  # type: ignore[attr-defined]
            host.accept_join(reply)
            self._joined = (stub, reply.session_id)
            try:
                if reply.step_lane_port:
                    outcome = await self._lane_session(reply)
                else:
                    outcome = await self._stream_session(stub, reply)
                if outcome == FINISHED:
                    await self._leave(stub, reply.session_id, "run finished")
                return outcome
            except grpc.RpcError as e:
                return _outcome(e)
            finally:
                self._joined = None
                leaving = self._leaving
                if leaving is not None and not leaving.done():  # let the Leave rpc finish
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(leaving), 2.0)

    async def _stream_session(self, stub: Any, reply: pb.JoinReply) -> SessionOutcome:
        """The step exchange on the gRPC Steps stream."""
        call = stub.Steps(metadata=self._metadata)
        self._call = call
        served = False
        try:
            if self.host.stopping:
                return STOPPED
            await call.write(pb.AgentMessage(attach=pb.Attach(session_id=reply.session_id)))
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                served = True
                out = self.host.on_message(msg)
                if isinstance(out, SessionOutcome):
                    return out
                if out is not None:
                    await call.write(out)
        except asyncio.CancelledError:
            if self.host.stopping:
                return STOPPED
            raise
        except grpc.RpcError as e:
            if self.host.stopping:
                return STOPPED
            log.warning("stream broke: %s", _code(e).name)
        finally:
            self._call = None
            call.cancel()
        return SERVED if served else failed("stream ended before any message")

    async def _lane_session(self, reply: pb.JoinReply) -> SessionOutcome:
        """The step exchange on the coordinator's step lane, on a thread of its own (a blocking
        socket: no event loop between a step's arrival and its answer)."""
        ex = self.exchange
        host, port = self.link.step_lane_address or (host_of(self.target), reply.step_lane_port)
        client = await asyncio.to_thread(ex.open, host, port)
        if isinstance(client, SessionOutcome):
            return client
        try:
            attach = pb.Attach(session_id=reply.session_id, token=self.link.token)
            return await asyncio.to_thread(ex.serve, client, pb.AgentMessage(attach=attach))
        finally:
            client.close()
