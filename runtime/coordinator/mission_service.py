"""The gRPC face of mission control (``qmix_edge.v1.Mission``, mission.proto): `MissionServicer`
turns Clock, Connect, FetchChunk, Deploy and Operate calls into `MissionControl` calls, with the
coordinator's identity rule for agents and the operator rule for Deploy and Operate (the operator
token, else loopback only). Registered with the generated ``add_MissionServicer_to_server``. No
torch.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..artifact import ArtifactError
from ..proto.v1 import mission_pb2 as mpb
from ..proto.v1 import mission_pb2_grpc as mpb_grpc
from ..rollout import RolloutError
from ..security import OPERATOR_HEADER, call_metadata
from .authorize import Authority
from .grpc_service import credentials
from .mission import MissionControl
from .sessions import Refusal


def _progress_differs(seen: mpb.DeployProgress) -> Callable[[MissionControl], bool]:
    def changed(m: MissionControl) -> bool:
        return m.progress() != seen

    return changed


class MissionServicer(mpb_grpc.MissionServicer):
    """The gRPC face of a `MissionControl` (register with `add_MissionServicer_to_server`)."""

    def __init__(
        self,
        control: MissionControl,
        authority: Authority | None = None,
        operator_token: str | None = None,
        default_lead_s: float = 0.5,
    ) -> None:
        self.control = control
        self.default_lead_s = default_lead_s
        """How far ahead an operator's pause, resume or end is announced when it does not say."""
        self.authority = authority or Authority(control.agent_ids, mutual_tls=False, tokens=None)
        """The coordinator's identity rule: an agent's link may only speak as itself."""
        self.operator_token = operator_token
        """The token qmix-deploy must present; None: Deploy only from loopback."""

    def _operator_ok(self, context: Any) -> str:
        """Why this Deploy call is refused ("" when it may go on)."""
        if self.operator_token is not None:
            given = call_metadata(context.invocation_metadata()).get(OPERATOR_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.operator_token.encode()):
                return "an operator's call needs the operator token (--operator-token-file)"
            return ""
        peer = str(context.peer())
        if peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:")):
            return ""
        return (
            f"an operator's call from {peer} refused: mission control has no operator token "
            "(qmix-coordinator --operator-token-file), so only a loopback caller may deploy"
        )

    async def Deploy(
        self, request: mpb.DeployRequest, context: Any
    ) -> AsyncIterator[mpb.DeployProgress]:
        why = self._operator_ok(context)
        if why:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        c = self.control
        try:
            offer = await asyncio.to_thread(c.offer, request.artifacts)
        except (ArtifactError, RolloutError) as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            return
        deadline = time.monotonic() + (request.timeout_s or 600.0)
        last = None
        while True:
            p = c.progress()
            if p.version != offer.version:  # another deploy replaced this one
                p.done, p.cancelled = True, "replaced by a newer offer"
            if p != last:
                yield p
                last = p
            if p.done or time.monotonic() > deadline:
                return
            await asyncio.to_thread(c.wait_for, _progress_differs(p), 1.0)

    async def Clock(self, request: mpb.ClockProbe, context: Any) -> mpb.ClockProbe:
        t1 = self.control.clock()
        return mpb.ClockProbe(t0=request.t0, t1=t1, t2=self.control.clock())

    async def FetchChunk(self, request: mpb.ChunkRequest, context: Any) -> mpb.Chunk:
        try:
            data = self.control.chunk(
                request.version, request.name, int(request.offset), int(request.max_bytes)
            )
        except Refusal as e:
            await context.abort(e.code, e.detail)
        return mpb.Chunk(offset=request.offset, data=data)

    async def Operate(self, request: mpb.OperateRequest, context: Any) -> mpb.MissionState:
        why = self._operator_ok(context)
        if why:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        c, A = self.control, mpb.OperateRequest
        lead = request.lead_s if request.lead_s > 0 else self.default_lead_s
        try:
            if request.action == A.PAUSE:
                at = c.pause(lead)
            elif request.action == A.RESUME:
                at = c.resume(lead)
            elif request.action == A.END:
                at = c.end_episode(lead)
            elif request.action == A.STATUS:
                at = 0.0
            else:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"unknown action {request.action}")
        except Refusal as e:
            await context.abort(e.code, e.detail)
        return c.state(at)

    async def Connect(
        self, request_iterator: AsyncIterator[mpb.FieldReport], context: Any
    ) -> AsyncIterator[mpb.MissionCommand]:
        c = self.control
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        try:
            self.authority.authorize(
                credentials(context, self.authority), hello.agent_id, "a mission link"
            )
            link = c.attach(hello.agent_id, hello.version, asyncio.get_running_loop())
        except Refusal as e:
            await context.abort(e.code, e.detail)
            return

        async def read() -> None:
            try:
                async for report in request_iterator:
                    c.handle(link, report)
            finally:
                link.queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                cmd = await link.queue.get()
                if cmd is None:
                    break
                yield cmd
        finally:
            reader.cancel()
            c.detach(link)
