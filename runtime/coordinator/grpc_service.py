"""The Team service on gRPC (grpc.aio): Join, the Steps stream and Leave, mapped onto `Sessions`,
the identity rule (`Authority.authorize`) and the step clock's `accept`; every failure is a
status code.

Registered through the generated ``team_pb2_grpc.add_TeamServicer_to_server`` (service and
method names, handler kinds and message types come from the generated code), with one change made
from the generated descriptors: request parsing never raises, so malformed bytes reach the
servicer as `Malformed` and are answered INVALID_ARGUMENT (a raising deserializer would be
answered INTERNAL by gRPC, before any handler of ours runs).

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from ..proto.v1 import team_pb2 as pb
from ..proto.v1 import team_pb2_grpc as pb_grpc
from ..security import AGENT_ID_HEADER, AUTHORIZATION_HEADER, call_metadata, cert_agent_id
from .authorize import Authority, Credentials
from .clock import StepClock
from .sessions import Refusal, Session, Sessions

log = logging.getLogger(__name__)


class Malformed:
    """What a request that is not a valid protobuf message parses to (answered INVALID_ARGUMENT)."""

    def __init__(self, message: str, error: Exception) -> None:
        self.detail = (
            f"the request is not a valid {message} message of protocol qmix_edge.v1 ({error}); "
            "check the agent speaks qmix_edge.v1 (protos/qmix_edge/runtime/proto/v1/team.proto)"
        )


def tolerant(parse: Callable[[bytes], Any], message: str) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: garbage becomes `Malformed` (``message``: the
    message type's name, for its detail)."""

    def parse_or_malformed(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as e:
            return Malformed(message, e)

    return parse_or_malformed


class _Registration:
    """Stands in for the server while the generated code registers the service: keeps its
    method handlers (the generic handler it also builds holds the same ones)."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        pass  # rebuilt from the registered method handlers (see add_team_service)


_MAKE_HANDLER = {  # (request streaming, response streaming) -> grpc's constructor
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _tolerant_handler(handler: Any, message: str) -> grpc.RpcMethodHandler:
    kind = (bool(handler.request_streaming), bool(handler.response_streaming))
    behavior = {
        (False, False): handler.unary_unary,
        (False, True): handler.unary_stream,
        (True, False): handler.stream_unary,
        (True, True): handler.stream_stream,
    }[kind]
    return _MAKE_HANDLER[kind](  # type: ignore[no-any-return, operator]
        behavior,
        request_deserializer=tolerant(handler.request_deserializer, message),
        response_serializer=handler.response_serializer,
    )


def add_team_service(servicer: pb_grpc.TeamServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the generated code does, with tolerant request parsing."""
    reg = _Registration()
    pb_grpc.add_TeamServicer_to_server(servicer, reg)
    methods = pb.DESCRIPTOR.services_by_name["Team"].methods_by_name
    if not reg.handlers or set(reg.handlers) != set(methods):
        raise RuntimeError(  # a bug: the generated code no longer registers as it did
            f"team_pb2_grpc registered {sorted(reg.handlers)}, expected {sorted(methods)}; "
            "regenerate the gRPC code (scripts/gen_protos.sh) and check grpcio-tools"
        )
    handlers = {
        name: _tolerant_handler(h, methods[name].input_type.name)
        for name, h in reg.handlers.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(reg.service, handlers),))
    server.add_registered_method_handlers(reg.service, handlers)  # type: ignore[attr-defined]


def credentials(context: Any, authority: Authority) -> Credentials:
    """What a gRPC call presented: its client certificate's agent and its bearer token."""
    md = call_metadata(context.invocation_metadata()) if authority.tokens is not None else {}
    auth = md.get(AUTHORIZATION_HEADER, "")
    return Credentials(
        peer=context.peer(),
        certificate=cert_agent_id(context.auth_context()) if authority.mutual_tls else None,
        token=auth[len("Bearer ") :] if auth.startswith("Bearer ") else None,
        token_agent_id=md.get(AGENT_ID_HEADER),
    )


class TeamServicer(pb_grpc.TeamServicer):
    """The Team service of one coordinator."""

    def __init__(self, sessions: Sessions, clock: StepClock, authority: Authority) -> None:
        self.sessions = sessions
        self.clock = clock
        self.authority = authority
        self.malformed: dict[str, str] = {}  # session id -> why its stream was ended

    async def _authorize(self, context: Any, agent_id: str, what: str) -> None:
        try:
            self.authority.authorize(credentials(context, self.authority), agent_id, what)
        except Refusal as r:
            await context.abort(r.code, r.detail)

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinReply:  # type: ignore[override]
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        await self._authorize(context, request.agent_id, "a Join")
        try:
            return await self.sessions.join(request, context.peer())
        except Refusal as r:
            log.info("refused join of %r: %s %s", request.agent_id[:80], r.code.name, r.detail)
            await context.abort(r.code, r.detail)
            raise  # unreachable: abort raises

    async def Leave(self, request: pb.LeaveRequest, context: Any) -> pb.LeaveReply:  # type: ignore[override]
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        s = self.sessions.get(request.session_id)
        if s is not None:
            await self._authorize(context, s.agent_id, "a Leave")
        await self.sessions.leave(request.session_id, request.reason)
        return pb.LeaveReply()

    async def Steps(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        first = await context.read()
        if first is grpc.aio.EOF:  # type: ignore[attr-defined]
            return
        if isinstance(first, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, first.detail)
        if first.WhichOneof("kind") != "attach":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first message of a Steps stream must be attach(session_id)",
            )
        known = self.sessions.get(first.attach.session_id)
        if known is not None:
            await self._authorize(context, known.agent_id, "a Steps stream")
        try:
            session = self.sessions.attach(first.attach.session_id, context, "stream")
        except Refusal as r:
            await context.abort(r.code, r.detail)
            raise
        # From here on the session holds its seat, so whatever ends this handler ends the session:
        # a client that cancels while Attached is being written cancels this task in that write
        # (CancelledError is no Exception: Session.write does not catch it), and without the
        # finally its seat would stay taken for good.
        reader: asyncio.Future[None] | None = None
        try:
            # Sent before the loop runs anything else, so it precedes any step of this session.
            await session.write(self.sessions.attached_message(session))
            reader = asyncio.ensure_future(self._read(session, context))
            await session.closed  # set when the session ends, whoever ends it
        finally:
            if reader is not None:
                reader.cancel()
            self.sessions.disconnected(session)
        detail = self.malformed.pop(session.id, None)
        if detail is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, detail)

    async def _read(self, session: Session, context: Any) -> None:
        accept = self.clock.accept
        try:
            while True:
                msg = await context.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                if isinstance(msg, Malformed):
                    # A broken or hostile client: end its session; the team goes on.
                    log.warning(
                        "agent %s sent a malformed message; session ended", session.agent_id
                    )
                    self.sessions.count_malformed(session)
                    self.malformed[session.id] = msg.detail
                    break
                if msg.WhichOneof("kind") == "step_reply":
                    accept(session, msg.step_reply)
                else:
                    log.warning("agent %s sent a second attach; ignored", session.agent_id)
        except asyncio.CancelledError:
            return
        except Exception as e:  # the stream broke (or was cancelled by the client)
            log.debug("stream of %s ended: %s", session.agent_id, e)
        self.sessions.disconnected(session)
