"""The coordinator's bearer-token check on gRPC: an interceptor in front of every handler.

Owns refusing, with UNAUTHENTICATED and before any handler runs, every call but health checks that
lacks a valid per-agent token (`qmix_edge.runtime.security.token_ok`). Kept apart from
`qmix_edge.runtime.security` so that module never loads grpc: an agent on the step lane alone
does not carry gRPC at all.

Must not import torch (nor qmix_edge.train / qmix_edge.export).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from .security import OPEN_METHOD_PREFIXES, call_metadata, token_ok

log = logging.getLogger(__name__)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call (but health checks) without a valid per-agent bearer token."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = dict(tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method  # type: ignore[attr-defined]
        handler = await continuation(handler_call_details)
        if method.startswith(OPEN_METHOD_PREFIXES) or handler is None:
            return handler
        ok, why = token_ok(self._tokens, call_metadata(handler_call_details.invocation_metadata))  # type: ignore[attr-defined]
        if ok:
            return handler
        log.info("refused %s: %s", method, why)
        return _deny_handler(handler, grpc.StatusCode.UNAUTHENTICATED, why)


def _deny_handler(handler: Any, code: grpc.StatusCode, detail: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that aborts with ``code`` (the request is
    never deserialized by the real handler)."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, detail)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, detail)
        yield  # pragma: no cover - an async generator that never yields

    rs, ss = handler.request_streaming, handler.response_streaming
    if rs and ss:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if rs:
        return grpc.stream_unary_rpc_method_handler(deny)
    if ss:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.unary_unary_rpc_method_handler(deny)
