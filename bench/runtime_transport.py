"""Round trips of the step exchange's carriers on loopback (Python): gRPC unary, gRPC streams, and
the step lane.

Decides the step transport of the qmix_edge.v1 protocol. One side sends the protocol's real
StepRequest (a 16-float observation and a 5-action mask), the other answers one StepReply, and the
round trip is measured:

- unary:        one gRPC unary call per round trip (sync server)
- stream:       one long-lived gRPC bidirectional stream, one message each way (sync server)
- stream-aio:   the same with grpc.aio on both sides (qmix-coordinator's and qmix-agent's Steps
                stream)
- lane:         the step lane: length-prefixed frames over TCP, an asyncio server in this process
                (the coordinator's end) and a blocking `LaneClient` in another (the agent's end)

Prints the median and p99 round trip per mode and each mode's ratio to the unary baseline.

    .venv/bin/python bench/runtime_transport.py --rounds 3000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import queue
import statistics
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from qmix_edge.runtime import lane
from qmix_edge.runtime.proto.v1 import team_pb2 as pb

UNARY = "/bench.Echo/Unary"
STREAM = "/bench.Echo/Stream"


def _reply_for(req: pb.StepRequest) -> pb.StepReply:
    return pb.StepReply(episode_id=req.episode_id, step=req.step, action=1)


def _handlers() -> grpc.GenericRpcHandler:
    def unary(req: pb.StepRequest, ctx: grpc.ServicerContext) -> pb.StepReply:
        return _reply_for(req)

    def stream(reqs: Iterator[pb.StepRequest], ctx: grpc.ServicerContext) -> Iterator[pb.StepReply]:
        for req in reqs:
            yield _reply_for(req)

    return grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                unary, pb.StepRequest.FromString, pb.StepReply.SerializeToString
            ),
            "Stream": grpc.stream_stream_rpc_method_handler(
                stream, pb.StepRequest.FromString, pb.StepReply.SerializeToString
            ),
        },
    )


def _serve_sync(port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_q.put(port)
    stop.wait()
    server.stop(0)


def _serve_aio(port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        async def stream(reqs, ctx):  # type: ignore[no-untyped-def]
            async for req in reqs:
                yield _reply_for(req)

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo",
            {
                "Stream": grpc.stream_stream_rpc_method_handler(
                    stream, pb.StepRequest.FromString, pb.StepReply.SerializeToString
                )
            },
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_q.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop(0)

    asyncio.run(run())


def step_request(i: int) -> pb.StepRequest:
    obs = np.arange(16, dtype=np.float32)
    mask = np.ones(5, dtype=bool)
    return pb.StepRequest(
        episode_id=1,
        step=i,
        observation=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[16], data=obs.tobytes()),
        action_mask=pb.Tensor(dtype=pb.DTYPE_BOOL, shape=[5], data=mask.tobytes()),
        deadline_ms=100,
    )


def measure_unary(port: int, rounds: int) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(
            UNARY,
            request_serializer=pb.StepRequest.SerializeToString,
            response_deserializer=pb.StepReply.FromString,
        )
        out = []
        for i in range(rounds + 100):
            t0 = time.perf_counter()
            call(step_request(i), timeout=5)
            if i >= 100:
                out.append(time.perf_counter() - t0)
        return out


def measure_stream(port: int, rounds: int) -> list[float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.stream_stream(
            STREAM,
            request_serializer=pb.StepRequest.SerializeToString,
            response_deserializer=pb.StepReply.FromString,
        )
        q: queue.SimpleQueue[pb.StepRequest | None] = queue.SimpleQueue()

        def requests() -> Iterator[pb.StepRequest]:
            while (item := q.get()) is not None:
                yield item

        replies = call(requests())
        out = []
        for i in range(rounds + 100):
            t0 = time.perf_counter()
            q.put(step_request(i))
            next(replies)
            if i >= 100:
                out.append(time.perf_counter() - t0)
        q.put(None)
        return out


def measure_stream_aio(port: int, rounds: int) -> list[float]:
    async def go() -> list[float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.stream_stream(
                STREAM,
                request_serializer=pb.StepRequest.SerializeToString,
                response_deserializer=pb.StepReply.FromString,
            )()
            out = []
            for i in range(rounds + 100):
                t0 = time.perf_counter()
                await call.write(step_request(i))
                await call.read()
                if i >= 100:
                    out.append(time.perf_counter() - t0)
            await call.done_writing()
            return out

    return asyncio.run(go())


def _lane_agent(port: int) -> None:
    """The agent's end of a lane: answer every StepRequest (subprocess)."""
    client = lane.LaneClient("127.0.0.1", port, max_message_bytes=64 * 1024)
    client.send(pb.AgentMessage(attach=pb.Attach(session_id="bench")))
    while (m := client.recv()) is not None:
        if m.WhichOneof("kind") == "step_request":
            reply = _reply_for(m.step_request)
            client.send(pb.AgentMessage(step_reply=reply))
    client.close()


def measure_lane(rounds: int, clients: int = 1) -> list[float]:
    """The coordinator's end in this process: an asyncio server, frames decoded as they arrive.

    With ``clients`` > 1 each round sends one frame to every client (each its own process) and
    ends with the last reply: the transport's own fan-out, what a team step costs with agents
    that decide nothing."""

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        attached: asyncio.Future[None] = loop.create_future()
        state: dict[str, Any] = {"replies": 0, "round": loop.create_future()}
        conns: list[asyncio.Transport] = []

        class End(asyncio.BufferedProtocol):  # as the coordinator's lane end reads
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.decoder = lane.FrameDecoder(64 * 1024)

            def get_buffer(self, sizehint: int) -> memoryview:
                return self.decoder.buffer()

            def buffer_updated(self, nbytes: int) -> None:
                for body in self.decoder.consumed(nbytes):
                    msg = pb.AgentMessage.FromString(body)
                    if msg.WhichOneof("kind") == "attach":
                        conns.append(self.transport)  # type: ignore[arg-type]
                        if len(conns) == clients:
                            attached.set_result(None)
                        continue
                    state["replies"] += 1
                    if state["replies"] == clients:
                        state["round"].set_result(None)

        server = await loop.create_server(End, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_lane_agent, args=(port,), daemon=True) for _ in range(clients)]
        for proc in procs:
            proc.start()
        try:
            await asyncio.wait_for(attached, 60)
            out = []
            for i in range(rounds + 100):
                state["replies"], state["round"] = 0, loop.create_future()
                t0 = time.perf_counter()
                for conn in conns:
                    conn.write(
                        lane.encode_frame(pb.CoordinatorMessage(step_request=step_request(i)))
                    )
                await state["round"]
                if i >= 100:
                    out.append(time.perf_counter() - t0)
            for conn in conns:
                conn.close()
            return out
        finally:
            server.close()
            for proc in procs:
                await asyncio.to_thread(proc.join, 10)

    return asyncio.run(go())


def summary(xs: list[float]) -> tuple[float, float]:
    us = sorted(x * 1e6 for x in xs)
    return statistics.median(us), us[int(0.99 * (len(us) - 1))]


def run(mode: str, rounds: int, clients: int = 1) -> tuple[float, float]:
    """(p50, p99) round trip in us of ``mode``; ``clients`` > 1 (the lane only): the fan-out."""
    if mode == "lane":
        return summary(measure_lane(rounds, clients))
    if clients != 1:
        raise ValueError(f"only the lane measures a fan-out; found mode {mode!r}")
    ctx = mp.get_context("spawn")
    port_q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    stop = ctx.Event()
    target = _serve_aio if mode == "stream-aio" else _serve_sync
    proc = ctx.Process(target=target, args=(port_q, stop), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        if mode == "unary":
            xs = measure_unary(port, rounds)
        elif mode == "stream":
            xs = measure_stream(port, rounds)
        else:
            xs = measure_stream_aio(port, rounds)
        return summary(xs)
    finally:
        stop.set()
        proc.join(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3000, help="round trips per mode (default 3000)")
    args = ap.parse_args(argv)
    results = {m: run(m, args.rounds) for m in ("unary", "stream", "stream-aio", "lane")}
    base = results["unary"][0]
    print(f"{'mode':<12} {'p50 us':>9} {'p99 us':>9} {'p50 / unary':>12}")
    for m, (p50, p99) in results.items():
        print(f"{m:<12} {p50:9.1f} {p99:9.1f} {p50 / base:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
