"""qmix-agent: one agent of the team on its own device (protocol qmix_edge.v1, the client side).

Owns the agent's life: load the policy (artifact verified before any onnxruntime session), dial
the coordinator, Join with the artifact's hash, answer every StepRequest greedily from the agent's
own inputs, reset the recurrent state at episode start and on every (re)join, reconnect with
exponential backoff and jitter when the coordinator goes away, and hold the fallback action while
the coordinator is quiet (watchdog; in field mode the fallback is actuated through the plug-in).

Steps travel on the coordinator's step lane (`qmix_edge.runtime.lane`: plain TCP frames, TLS
when the coordinator has TLS, read on a thread of its own with a blocking socket) when it offers
one, else on the gRPC Steps stream; Join and Leave are always gRPC.

Simulation: the observation and mask come in the StepRequest. Field: they come from a sensor
plug-in and the action goes to an actuator plug-in (see `qmix_edge.runtime.field`).

Security (`qmix_edge.runtime.security`): TLS to the coordinator (``--tls-ca``), a client
certificate for mutual TLS (``--tls-cert``/``--tls-key``; it names this agent's id), and an optional
bearer token sent with every call (``--token-file``). Plain text only to a loopback coordinator
unless ``--allow-insecure``.

Base install only: must not import torch (nor qmix_edge.train / qmix_edge.export); a test runs this
command with torch made unimportable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import grpc
import numpy as np

from . import wire
from .errors import JoinRefused, RuntimeFailure, WireError
from .field import Actuator, FieldStep, Sensor, as_reading, load_callable
from .lane import LaneClient, parse_address
from .proto.v1 import team_pb2 as pb
from .proto.v1 import team_pb2_grpc as pb_grpc
from .security import (
    ClientTls,
    SecurityConfigError,
    host_of,
    read_token_file,
    require_secure_or_loopback,
    token_metadata,
)

log = logging.getLogger(__name__)

# Refusals that retrying cannot fix: the agent exits with a configuration error.
FATAL_JOIN_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


class PolicyLike(Protocol):
    """What the agent needs of `qmix_edge.runtime.policy.AgentPolicy`."""

    @property
    def agent_id(self) -> str: ...
    @property
    def obs_dim(self) -> int: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def fallback_action(self) -> int: ...
    @property
    def artifact_sha256(self) -> str: ...

    def act(self, obs: np.ndarray, mask: np.ndarray | None) -> Any: ...

    def record_action(self, action: int) -> None: ...

    def reset(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential reconnect backoff with full jitter: delay n is uniform in [base/2, base]."""

    initial_s: float = 0.05
    """First delay."""
    max_s: float = 2.0
    """Largest delay."""
    multiplier: float = 2.0
    """Growth per failed attempt."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt))
        return rng.uniform(base / 2, base)


@dataclass(frozen=True)
class AgentFaults:
    """Failures an agent injects on purpose (qmix-eval fault plans). Team steps are the
    coordinator's ``StepRequest.team_step``."""

    kill_at_team_step: int | None = None
    """SIGKILL this process on receiving this team step (or the first one after it)."""
    stall_at_team_step: int | None = None
    """Sleep `stall_ms` before answering this team step (once)."""
    stall_ms: int = 0
    """Stall length."""
    drop_fraction: float = 0.0
    """Fraction of StepRequests left unanswered."""
    seed: int = 0
    """Seed of the drop decisions."""


@dataclass
class AgentStats:
    """What one agent process did (for logs and its final line)."""

    sessions: int = 0
    steps: int = 0
    episodes: int = 0
    fallbacks_held: int = 0
    bad_requests: int = 0
    dropped: int = 0


class AgentRunner:
    """Runs one agent against one coordinator until the run is finished, or `stop`."""

    def __init__(
        self,
        policy: PolicyLike,
        target: str,
        *,
        client_name: str | None = None,
        sensor: Sensor | None = None,
        actuator: Actuator | None = None,
        backoff: Backoff | None = None,
        watchdog_s: float = 1.0,
        give_up_s: float = 0.0,
        join_timeout_s: float = 5.0,
        max_message_bytes: int = wire.MAX_MESSAGE_BYTES,
        faults: AgentFaults | None = None,
        seed: int | None = None,
        tls: ClientTls | None = None,
        token: str | None = None,
        step_lane: bool = True,
        step_lane_address: str | None = None,
    ) -> None:
        """``tls``: dial over TLS (with a client certificate: mutual TLS). ``token``: the bearer
        token of this agent, sent with every gRPC call. ``step_lane``: step on the coordinator's
        step lane when it offers one (False: always the gRPC Steps stream).
        ``step_lane_address``: ``HOST:PORT`` to dial for the step lane instead of the
        coordinator's host and the port its Join names (a port forward or proxy in between)."""
        self.policy = policy
        self.step_lane = step_lane
        self.step_lane_address = parse_address(step_lane_address) if step_lane_address else None
        self.tls = tls
        self._credentials = tls.credentials() if tls is not None else None
        self._metadata = token_metadata(policy.agent_id, token) if token else None
        self._token = token or ""
        self.target = target
        self.client_name = client_name or f"{socket.gethostname()}:{os.getpid()}"
        self.sensor = sensor
        self.actuator = actuator
        self.backoff = backoff or Backoff()
        self.watchdog_s = watchdog_s
        self.give_up_s = give_up_s
        self.join_timeout_s = join_timeout_s
        self.max_message_bytes = max_message_bytes
        self.faults = faults or AgentFaults()
        self.stats = AgentStats()
        self._rng = random.Random(seed)
        self._drop_rng = random.Random(self.faults.seed)
        self._stalled = False
        self._stop = threading.Event()
        self._last_heard = time.monotonic()
        self._holding = True  # nothing heard yet: the fallback is what the device does
        self._mode = pb.MODE_SIMULATION
        self._call: Any = None
        self._lane: LaneClient | None = None
        self._joined: tuple[Any, str] | None = None  # (stub, session id) while a stream is open
        self._leaving: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None

    # ---------------------------------------------------------------------------- control
    def stop(self) -> None:
        """Leave at the next opportunity (thread-safe, signal-safe)."""
        self._stop.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel_call)

    def _cancel_call(self) -> None:
        if self._stop_async is not None:
            self._stop_async.set()
        if self._joined is not None:  # say goodbye first, so the seat is freed as "left"
            stub, session_id = self._joined
            self._leaving = asyncio.ensure_future(self._leave_then_break(stub, session_id))
        else:
            self._break_session()

    async def _leave_then_break(self, stub: Any, session_id: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._leave(stub, session_id, "agent stopping"), 1.0)
        self._break_session()

    def _break_session(self) -> None:
        """End the open Steps stream or step lane (the session's loop then returns)."""
        if self._call is not None:
            self._call.cancel()
        if self._lane is not None:
            self._lane.interrupt()

    def run(self) -> int:
        """Join, serve, rejoin. Returns 0 when the coordinator finished the run, 1 when it gave up
        reconnecting (``give_up_s``) or was stopped, 2 when the coordinator refused this agent.

        The gRPC client is grpc.aio: receiving a step, deciding and replying happen on one thread
        without hand-offs."""
        watchdog = threading.Thread(target=self._watchdog, daemon=True, name="agent-watchdog")
        watchdog.start()
        try:
            return asyncio.run(self._run())
        finally:
            self._stop.set()
            self._loop = None
            if self.actuator is not None:  # leave the device in its safe state
                self._hold_fallback("agent stopping")

    async def _run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        attempt = 0
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            options: list[tuple[str, Any]] = [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ]
            if self._credentials is not None and self.tls is not None:
                options += self.tls.channel_options()
                channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
            else:
                channel = grpc.aio.insecure_channel(self.target, options=options)
            async with channel:
                try:
                    outcome = await self._session(pb_grpc.TeamStub(channel))  # type: ignore[no-untyped-call]
                except JoinRefused as e:
                    if e.code in FATAL_JOIN_CODES:
                        log.error("%s", e)
                        return 2
                    outcome = f"join refused ({e.code.name})"
                except grpc.RpcError as e:
                    outcome = f"{e.code().name}: {e.details()}"  # type: ignore[attr-defined]
            if outcome == "finished":
                return 0
            if outcome == "stopped" or self._stop.is_set():
                break
            if outcome == "served":
                attempt, quiet_since = 0, time.monotonic()
                outcome = "stream ended"
            self._hold_fallback(f"coordinator unreachable ({outcome})")
            if self.give_up_s > 0 and time.monotonic() - quiet_since > self.give_up_s:
                log.error("no coordinator for %.1f s; giving up", self.give_up_s)
                return 1
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("reconnecting in %.2f s (%s)", delay, outcome)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_async.wait(), delay)
        return 1

    # ---------------------------------------------------------------------------- session
    async def _session(self, stub: Any) -> str:
        """One Join + Steps stream. Returns "finished", "served" (the stream ran and ended),
        "stopped", or a short description of why it did not run."""
        try:
            reply = await stub.Join(
                pb.JoinRequest(
                    protocol_version=wire.PROTOCOL_VERSION,
                    agent_id=self.policy.agent_id,
                    artifact_sha256=self.policy.artifact_sha256,
                    client_name=self.client_name,
                    step_lane=self.step_lane,
                ),
                timeout=self.join_timeout_s,
                metadata=self._metadata,
            )
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if code in FATAL_JOIN_CODES or code == grpc.StatusCode.ALREADY_EXISTS:
                raise JoinRefused(code, e.details() or "") from e  # type: ignore[attr-defined]
            raise
        if reply.obs_dim != self.policy.obs_dim or reply.n_actions != self.policy.n_actions:
            raise JoinRefused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"coordinator expects obs_dim {reply.obs_dim} and {reply.n_actions} actions, "
                f"this artifact has {self.policy.obs_dim} and {self.policy.n_actions}",
            )
        self.stats.sessions += 1
        self._mode = reply.mode
        self.policy.reset()  # a (re)join starts from a clean recurrent state
        log.info(
            "joined team %s as %s (index %d of %d, coordinator %s)",
            reply.team_id,
            self.policy.agent_id,
            reply.agent_index,
            reply.n_agents,
            reply.coordinator_instance,
        )
        if reply.step_lane_port:
            return await self._lane_session(stub, reply)
        return await self._stream_session(stub, reply)

    async def _stream_session(self, stub: Any, reply: pb.JoinReply) -> str:
        """The step exchange on the gRPC Steps stream; returns like `_session`."""
        call = stub.Steps(metadata=self._metadata)
        self._call = call
        self._joined = (stub, reply.session_id)
        served = False
        try:
            await call.write(pb.AgentMessage(attach=pb.Attach(session_id=reply.session_id)))
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    break
                served = True
                out = self._on_message(msg)
                if out == "finished":
                    await self._leave(stub, reply.session_id, "run finished")
                if isinstance(out, str):
                    return out
                if out is not None:
                    await call.write(out)
        except asyncio.CancelledError:
            if self._stop.is_set():
                return "stopped"
            raise
        except grpc.RpcError as e:
            if self._stop.is_set():
                return "stopped"
            log.warning("stream broke: %s", e.code().name)  # type: ignore[attr-defined]
        finally:
            self._call = None
            self._joined = None
            call.cancel()
        return "served" if served else "stream ended before any message"

    async def _lane_session(self, stub: Any, reply: pb.JoinReply) -> str:
        """The step exchange on the coordinator's step lane, on a thread of its own (a blocking
        socket: no event loop between a step's arrival and its answer); returns like `_session`."""
        host, port = self.step_lane_address or (host_of(self.target), reply.step_lane_port)
        try:
            client = await asyncio.to_thread(
                LaneClient,
                host,
                port,
                tls=self.tls,
                max_message_bytes=self.max_message_bytes,
                connect_timeout_s=self.join_timeout_s,
            )
        except OSError as e:
            return f"step lane {host}:{port} unreachable ({e})"
        self._lane = client
        self._joined = (stub, reply.session_id)
        try:
            if self._stop.is_set():
                return "stopped"
            outcome = await asyncio.to_thread(self._serve_lane, client, reply.session_id)
            if outcome == "finished":
                await self._leave(stub, reply.session_id, "run finished")
            return outcome
        finally:
            self._lane = None
            self._joined = None
            client.close()

    def _serve_lane(self, client: LaneClient, session_id: str) -> str:
        served = False
        try:
            attach = pb.Attach(session_id=session_id, token=self._token)
            client.send(pb.AgentMessage(attach=attach))
            while (msg := client.recv()) is not None:
                served = True
                out = self._on_message(msg)
                if isinstance(out, str):
                    return out
                if out is not None:
                    client.send(out)
        except (OSError, WireError) as e:
            if not self._stop.is_set():
                log.warning("step lane broke: %s", e)
        if self._stop.is_set():
            return "stopped"
        return "served" if served else "step lane ended before any message"

    def _on_message(self, msg: pb.CoordinatorMessage) -> pb.AgentMessage | str | None:
        """Handle one coordinator message (either carrier): the message to answer with, or the
        session's outcome when it ends ("finished", "served", "refused: ..."), or None."""
        self._heard()
        kind = msg.WhichOneof("kind")
        if kind == "step_request":
            answer = self._answer(msg.step_request)
            return pb.AgentMessage(step_reply=answer) if answer is not None else None
        if kind == "episode_start":
            self.policy.reset()
            self.stats.episodes += 1
        elif kind == "goodbye":
            g = msg.goodbye
            if g.reason == pb.GOODBYE_REASON_REFUSED:
                log.warning("step lane refused (status %d): %s", g.status_code, g.detail)
                return f"refused: {g.detail}"
            log.info("coordinator says goodbye: %s (%s)", pb.GoodbyeReason.Name(g.reason), g.detail)
            return "finished" if g.reason == pb.GOODBYE_REASON_RUN_FINISHED else "served"
        return None

    async def _leave(self, stub: Any, session_id: str, reason: str) -> None:
        with contextlib.suppress(grpc.RpcError):
            await stub.Leave(
                pb.LeaveRequest(session_id=session_id, reason=reason),
                timeout=1.0,
                metadata=self._metadata,
            )

    # ---------------------------------------------------------------------------- a step
    def _answer(self, req: pb.StepRequest) -> pb.StepReply | None:
        f = self.faults
        if f.kill_at_team_step is not None and req.team_step >= f.kill_at_team_step:
            log.warning("fault plan: killing this agent at team step %d", req.team_step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        if f.drop_fraction > 0 and self._drop_rng.random() < f.drop_fraction:
            self.stats.dropped += 1
            return None
        t0 = time.perf_counter()
        reply = self._decide(req)
        reply.decision_us = min(int((time.perf_counter() - t0) * 1e6), 2**32 - 1)
        if (
            f.stall_at_team_step is not None
            and not self._stalled
            and req.team_step >= f.stall_at_team_step
        ):
            self._stalled = True
            log.warning("fault plan: stalling %d ms at team step %d", f.stall_ms, req.team_step)
            time.sleep(f.stall_ms / 1000.0)
        self.stats.steps += 1
        return reply

    def _decide(self, req: pb.StepRequest) -> pb.StepReply:
        p = self.policy
        reply = pb.StepReply(episode_id=req.episode_id, step=req.step)
        try:
            if self.sensor is not None:
                ctx = FieldStep(p.agent_id, p.obs_dim, p.n_actions, req.episode_id, req.step)
                reading = as_reading(self.sensor(ctx), p.obs_dim, p.n_actions)
                obs, mask = reading.obs, reading.mask
                for k, v in reading.report.items():
                    reply.report[k] = v
            else:
                if req.HasField("previous_action"):
                    # What the team really applied (the fallback after a miss) feeds prev_action.
                    p.record_action(int(req.previous_action))
                obs = wire.decode(
                    req.observation, name="observation", dtype=pb.DTYPE_FLOAT32, shape=(p.obs_dim,)
                )
                mask = (
                    wire.decode(
                        req.action_mask,
                        name="action_mask",
                        dtype=pb.DTYPE_BOOL,
                        shape=(p.n_actions,),
                    )
                    if req.HasField("action_mask")
                    else None
                )
            reply.action = int(p.act(obs, mask).action)
        except (WireError, RuntimeFailure, ValueError) as e:  # ValueError: PolicyInputError
            self.stats.bad_requests += 1
            log.warning("step %d: %s; answering with the fallback action", req.step, e)
            reply.action = p.fallback_action
            reply.is_fallback = True
        if self.actuator is not None:
            self._actuate(
                FieldStep(
                    p.agent_id,
                    p.obs_dim,
                    p.n_actions,
                    req.episode_id,
                    req.step,
                    is_fallback=reply.is_fallback,
                ),
                int(reply.action),
            )
        return reply

    def _actuate(self, ctx: FieldStep, action: int) -> None:
        assert self.actuator is not None
        try:
            self.actuator(ctx, action)
        except Exception:
            log.exception("the actuator plug-in failed for action %d", action)

    # ---------------------------------------------------------------------------- watchdog
    def _heard(self) -> None:
        self._last_heard = time.monotonic()
        if self._holding:
            self._holding = False
            log.info("coordinator heard again: acting on decisions")

    def _hold_fallback(self, why: str) -> None:
        if not self._holding:
            self._holding = True
            log.warning("holding the fallback action %d: %s", self.policy.fallback_action, why)
        self.stats.fallbacks_held += 1
        if self.actuator is not None:
            p = self.policy
            self._actuate(
                FieldStep(p.agent_id, p.obs_dim, p.n_actions, 0, 0, is_fallback=True),
                p.fallback_action,
            )

    def _watchdog(self) -> None:
        """Hold the fallback when nothing came from the coordinator for ``watchdog_s``."""
        while not self._stop.wait(self.watchdog_s / 4):
            quiet = time.monotonic() - self._last_heard
            if quiet > self.watchdog_s and (not self._holding or self.actuator is not None):
                self._hold_fallback(f"coordinator quiet for {quiet:.2f} s")
                self._last_heard = time.monotonic()  # re-actuate at most once per period


# ---------------------------------------------------------------------------------- the CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qmix-agent",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run one agent of a team on this device: load its ONNX graph from the artifact,\n"
            "dial the coordinator, and act greedily from this device's own inputs. Reconnects\n"
            "with backoff and holds the fallback action while the coordinator is away.\n\n"
            "example:\n"
            "  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator 10.0.0.2:50051\n"
            "  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator ground:50051 \\\n"
            "      --sensor examples.field_plugin:read_sensors --actuator examples.field_plugin:actuate"
        ),
    )
    p.add_argument("--artifacts", required=True, help="artifact directory (manifest.json)")
    p.add_argument("--agent", required=True, help="agent id in the manifest, e.g. agent_0")
    p.add_argument("--coordinator", required=True, help="HOST:PORT of qmix-coordinator")
    p.add_argument("--public-key", default=None, help="Ed25519 key the manifest must verify with")
    p.add_argument("--sensor", default=None, help="field mode: module:callable giving observations")
    p.add_argument("--actuator", default=None, help="field mode: module:callable taking actions")
    p.add_argument("--watchdog-s", type=float, default=1.0, help="hold fallback after (default 1)")
    p.add_argument(
        "--give-up-s", type=float, default=0.0, help="exit after this long unreachable, 0 = never"
    )
    p.add_argument("--backoff-max-s", type=float, default=2.0, help="largest reconnect delay")
    p.add_argument("--fault-kill-at-step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-stall-at-step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-stall-ms", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fault-drop-fraction", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--fault-seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--tls-ca", default=None, help="dial TLS; the CA of the coordinator's cert")
    p.add_argument(
        "--tls-cert",
        default=None,
        help="mutual TLS: this agent's certificate (CN or SAN URI qmix-agent:<id> = --agent)",
    )
    p.add_argument("--tls-key", default=None, help="private key of --tls-cert")
    p.add_argument(
        "--tls-server-name", default=None, help="name the coordinator's certificate must carry"
    )
    p.add_argument(
        "--token", default=None, help="bearer token (prefer --token-file: ps shows this)"
    )
    p.add_argument("--token-file", default=None, help="file holding this agent's bearer token")
    p.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow plain text to a non-loopback coordinator (a trusted network only)",
    )
    p.add_argument(
        "--no-step-lane",
        action="store_true",
        help="always step on the gRPC Steps stream, even when the coordinator offers its step lane",
    )
    p.add_argument(
        "--step-lane-address",
        default=None,
        help="HOST:PORT to dial for the step lane instead of the coordinator's host and the port "
        "it names (a port forward or proxy in between)",
    )
    p.add_argument("--log-level", default="INFO", help="default INFO")
    return p


def client_security(args: argparse.Namespace) -> tuple[ClientTls | None, str | None]:
    """The TLS material and token the flags name; `SecurityConfigError` when inconsistent."""
    if args.tls_cert and not args.tls_ca:
        raise SecurityConfigError("--tls-cert (mutual TLS) needs --tls-ca as well")
    tls = (
        ClientTls(
            Path(args.tls_ca),
            Path(args.tls_cert) if args.tls_cert else None,
            Path(args.tls_key) if args.tls_key else None,
            args.tls_server_name,
        )
        if args.tls_ca
        else None
    )
    if tls is not None:
        tls.credentials()  # read the files now: a config error, not a runtime one
    if args.token and args.token_file:
        raise SecurityConfigError("give --token or --token-file, not both")
    token = read_token_file(args.token_file) if args.token_file else args.token
    require_secure_or_loopback(
        host_of(args.coordinator), tls is not None, args.allow_insecure, "--tls-ca"
    )
    return tls, token


def load_policy(artifacts: str, agent_id: str, public_key: str | None) -> PolicyLike:
    """Load the agent's verified ONNX policy (artifact hash/signature checked before the session)."""
    from .policy import AgentPolicy

    policy: PolicyLike = AgentPolicy.load(artifacts, agent_id, public_key=public_key)
    return policy


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {args.agent} %(name)s: %(message)s",
    )
    if (args.sensor is None) != (args.actuator is None):
        log.error("field mode needs both --sensor and --actuator (found only one)")
        return 2
    try:
        if args.step_lane_address:
            parse_address(args.step_lane_address)  # a usage error before the artifact is loaded
        tls, token = client_security(args)
        policy = load_policy(args.artifacts, args.agent, args.public_key)
        sensor = load_callable(args.sensor) if args.sensor else None
        actuator = load_callable(args.actuator) if args.actuator else None
    except Exception as e:  # artifact and plug-in problems are the user's to fix
        log.error("%s: %s", type(e).__name__, e)
        return 2
    runner = AgentRunner(
        policy,
        args.coordinator,
        sensor=sensor,
        actuator=actuator,
        backoff=Backoff(max_s=args.backoff_max_s),
        watchdog_s=args.watchdog_s,
        give_up_s=args.give_up_s,
        faults=AgentFaults(
            kill_at_team_step=args.fault_kill_at_step,
            stall_at_team_step=args.fault_stall_at_step,
            stall_ms=args.fault_stall_ms,
            drop_fraction=args.fault_drop_fraction,
            seed=args.fault_seed,
        ),
        tls=tls,
        token=token,
        step_lane=not args.no_step_lane,
        step_lane_address=args.step_lane_address,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    code = runner.run()
    st = runner.stats
    log.info(
        "agent %s exits %d: %d sessions, %d episodes, %d steps answered, %d dropped, %d bad requests",
        args.agent,
        code,
        st.sessions,
        st.episodes,
        st.steps,
        st.dropped,
        st.bad_requests,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
