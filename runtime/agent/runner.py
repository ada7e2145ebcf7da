"""qmix-agent: one agent of the team on its own device (protocol qmix_edge.v1, the client side).

Owns the agent's life: load the policy (artifact verified before any onnxruntime session), dial
the coordinator, Join with the artifact's hash, answer every StepRequest greedily from the agent's
own inputs, reset the recurrent state at episode start and on every (re)join, reconnect with
exponential backoff and jitter when the coordinator goes away, and hold the fallback action while
the coordinator is quiet (watchdog; in field mode the fallback is actuated through the plug-in).
Whatever the agent sends or actuates in place of a decision follows the one legal-action rule
(`qmix_edge.runtime.legal`): the fallback action if the last known mask allows it, else the lowest
allowed action.

Two ways to reach the coordinator:
- its step lane alone (``--step-lane-address``; `qmix_edge.runtime.lane`: plain TCP frames, TLS
  when the coordinator has TLS, a blocking socket): Join, steps and Leave all travel on the lane,
  and this process never loads gRPC (about 15 MiB less resident memory on a small device);
- its gRPC port (``--coordinator``; `qmix_edge.runtime.agent.grpc_carrier`): Join and Leave over gRPC,
  steps on the step lane when the coordinator offers one, else on the gRPC Steps stream.

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

import numpy as np

from qmix_edge.common import settings

from .. import wire
from ..errors import STATUS_CODES, JoinRefused, RuntimeFailure, WireError
from ..field import Actuator, FieldStep, Sensor, as_reading, load_callable
from ..lane import LaneClient, parse_address
from ..legal import legal_action, substitute
from ..proto.v1 import team_pb2 as pb
from ..security import (
    ClientTls,
    SecurityConfigError,
    host_of,
    read_token_file,
    require_secure_or_loopback,
)
from .config import GROUPS as CONFIG_GROUPS
from .config import AgentConfig

log = logging.getLogger(__name__)

# Refusals that retrying cannot fix (gRPC status code numbers): the agent exits with a
# configuration error. Any other refusal (ALREADY_EXISTS, UNAVAILABLE...) is retried with backoff.
FATAL_JOIN_CODES = frozenset(
    STATUS_CODES[name]
    for name in (
        "NOT_FOUND",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    )
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

    def act(
        self, obs: np.ndarray, mask: np.ndarray | None, *, known_finite: bool = False
    ) -> Any: ...

    def record_action(self, action: int) -> None: ...

    def reset(self) -> None: ...


class Carrier(Protocol):
    """How an `AgentRunner` reaches its coordinator: one session at a time."""

    def session(self) -> str:
        """Join and run the step exchange until it ends. Returns "finished" (the run is over),
        "served" (the exchange ran, then ended), "stopped", or a short description of why it did
        not run; raises `JoinRefused` when the coordinator refused the Join."""
        ...

    def stop(self) -> None:
        """Leave and end the open session soon (thread-safe, signal-safe, never blocks)."""
        ...

    def close(self) -> None:
        """Release what the carrier holds (after the last session)."""
        ...


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
    attached: int = 0
    """Attaches the coordinator acknowledged (one per session that reached the step exchange)."""
    steps: int = 0
    episodes: int = 0
    fallbacks_held: int = 0
    bad_requests: int = 0
    dropped: int = 0
    silences_ended: int = 0
    """Times the coordinator was heard again after a silence (its first contact is not one)."""


class AgentRunner:
    """Runs one agent against one coordinator until the run is finished, or `stop`."""

    def __init__(
        self,
        policy: PolicyLike,
        target: str | None,
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
        """``target``: the coordinator's gRPC ``HOST:PORT`` (None: join on the step lane alone,
        at ``step_lane_address``, and never load gRPC). ``tls``: dial over TLS (with a client
        certificate: mutual TLS). ``token``: this agent's bearer token (gRPC metadata, or the
        lane's Attach / JoinRequest field). ``step_lane``: with a ``target``, step on the
        coordinator's step lane when it offers one (False: always the gRPC Steps stream).
        ``step_lane_address``: ``HOST:PORT`` of the step lane; with a ``target``, dialled instead
        of the coordinator's host and the port its Join names (a port forward or proxy)."""
        if target is None and step_lane_address is None:
            raise ValueError(
                "give the coordinator's gRPC address (target / --coordinator) or its step lane's "
                "address (step_lane_address / --step-lane-address); found neither"
            )
        if step_lane_address is not None and not step_lane:
            raise ValueError("a step lane address was given, but the step lane is turned off")
        self.policy = policy
        self.step_lane = step_lane
        self.step_lane_address = parse_address(step_lane_address) if step_lane_address else None
        self.tls = tls
        self.token = token or ""
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
        # The most recent action mask this agent saw (None: none yet, every action allowed): what
        # the watchdog's hold and a failed decision choose their legal substitute under.
        self._last_mask: np.ndarray | None = None
        self._heard_once = False
        self._lane: LaneClient | None = None  # the open step lane, whichever carrier opened it
        self._carrier: Carrier
        if target is None:
            self._carrier = _LaneCarrier(self)
        else:
            from .grpc_carrier import GrpcCarrier  # loads grpc: only agents that dial gRPC

            self._carrier = GrpcCarrier(self, target)

    # ---------------------------------------------------------------------------- control
    @property
    def stopping(self) -> bool:
        """`stop` was called (or the run is over)."""
        return self._stop.is_set()

    @property
    def lane(self) -> LaneClient | None:
        """The open step lane, whichever carrier opened it."""
        return self._lane

    def stop(self) -> None:
        """Leave at the next opportunity (thread-safe, signal-safe)."""
        self._stop.set()
        self._carrier.stop()

    def run(self) -> int:
        """Join, serve, rejoin. Returns 0 when the coordinator finished the run, 1 when it gave up
        reconnecting (``give_up_s``) or was stopped, 2 when the coordinator refused this agent.

        Receiving a step, deciding and replying happen on one thread without hand-offs."""
        watchdog = threading.Thread(target=self._watchdog, daemon=True, name="agent-watchdog")
        watchdog.start()
        try:
            return self._reconnect_loop()
        finally:
            self._stop.set()
            self._carrier.close()
            if self.actuator is not None:  # leave the device in its safe state
                self._hold_fallback("agent stopping")

    def _reconnect_loop(self) -> int:
        attempt = 0
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            try:
                outcome = self._carrier.session()
            except JoinRefused as e:
                if e.code in FATAL_JOIN_CODES:
                    log.error("%s", e)
                    return 2
                outcome = f"join refused ({e.code_name})"
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
            if self._stop.wait(delay):
                break
        return 1

    # ---------------------------------------------------------------------------- session
    def join_request(self) -> pb.JoinRequest:
        """This agent's JoinRequest (the token only travels in it on the step lane)."""
        return pb.JoinRequest(
            protocol_version=wire.PROTOCOL_VERSION,
            agent_id=self.policy.agent_id,
            artifact_sha256=self.policy.artifact_sha256,
            client_name=self.client_name,
            step_lane=self.step_lane,
        )

    def accept_join(self, reply: pb.JoinReply) -> None:
        """Take the coordinator's JoinReply (either carrier): check it fits this artifact
        (`JoinRefused` FAILED_PRECONDITION otherwise) and start from a clean recurrent state."""
        if reply.obs_dim != self.policy.obs_dim or reply.n_actions != self.policy.n_actions:
            raise JoinRefused(
                STATUS_CODES["FAILED_PRECONDITION"],
                f"coordinator expects obs_dim {reply.obs_dim} and {reply.n_actions} actions, "
                f"this artifact has {self.policy.obs_dim} and {self.policy.n_actions}",
            )
        self.stats.sessions += 1
        self.policy.reset()  # a (re)join starts from a clean recurrent state
        log.info(
            "joined team %s as %s (index %d of %d, coordinator %s)",
            reply.team_id,
            self.policy.agent_id,
            reply.agent_index,
            reply.n_agents,
            reply.coordinator_instance,
        )

    def open_lane(self, host: str, port: int) -> LaneClient | str:
        """Dial the step lane; the client, or why it could not be reached."""
        try:
            return LaneClient(
                host,
                port,
                tls=self.tls,
                max_message_bytes=self.max_message_bytes,
                connect_timeout_s=self.join_timeout_s,
            )
        except OSError as e:
            return f"step lane {host}:{port} unreachable ({e})"
        except SecurityConfigError as e:  # the files were checked at start-up: being replaced?
            return f"step lane TLS files unusable now ({e})"

    def serve_lane(self, client: LaneClient, first: pb.AgentMessage) -> str:
        """Send ``first`` (attach to a session joined over gRPC, or join on the lane itself), then
        answer the coordinator until the lane ends; returns like `Carrier.session`. Raises
        `JoinRefused` when a join on the lane is refused."""
        self._lane = client
        served = False
        try:
            if self._stop.is_set():
                return "stopped"
            client.send(first)
            if first.WhichOneof("kind") == "join":
                client.set_timeout(self.join_timeout_s)  # as long as a Join rpc may take
                answer = client.recv()
                client.set_timeout(None)
                if answer is None:
                    return "step lane closed before answering the join"
                kind = answer.WhichOneof("kind")
                g = answer.goodbye
                if kind == "goodbye" and g.reason == pb.GOODBYE_REASON_REFUSED:
                    raise JoinRefused(g.status_code, g.detail)
                if kind != "join_reply":
                    raise WireError(f"the coordinator answered a join with {kind}, not join_reply")
                self.accept_join(answer.join_reply)
            while (msg := client.recv()) is not None:
                served = True
                out = self.on_message(msg)
                if isinstance(out, str):
                    return out
                if out is not None:
                    client.send(out)
        except (OSError, WireError) as e:
            if not self._stop.is_set():
                log.warning("step lane broke: %s", e)
        finally:
            self._lane = None
        if self._stop.is_set():
            return "stopped"
        return "served" if served else "step lane ended before any message"

    def on_message(self, msg: pb.CoordinatorMessage) -> pb.AgentMessage | str | None:
        """Handle one coordinator message (either carrier): the message to answer with, or the
        session's outcome when it ends ("finished", "served", "refused: ..."), or None."""
        self._heard()
        kind = msg.WhichOneof("kind")
        if kind == "step_request":
            # The reply is built inside the message that carries it (no copy into a wrapper);
            # SetInParent: a reply whose fields are all zero is still a step_reply.
            out = pb.AgentMessage()
            reply = out.step_reply
            reply.SetInParent()
            return out if self._answer(msg.step_request, reply) is not None else None
        if kind == "episode_start":
            self.policy.reset()
            self.stats.episodes += 1
        elif kind == "attached":
            a = msg.attached
            self.stats.attached += 1
            log.info(
                "attached (%d of %d agents in the team)%s",
                a.agents_attached,
                a.n_agents,
                "" if a.agents_attached >= a.n_agents else ": waiting for the team",
            )
        elif kind == "goodbye":
            g = msg.goodbye
            if g.reason == pb.GOODBYE_REASON_REFUSED:
                log.warning("step lane refused (status %d): %s", g.status_code, g.detail)
                return f"refused: {g.detail}"
            log.info("coordinator says goodbye: %s (%s)", pb.GoodbyeReason.Name(g.reason), g.detail)
            return "finished" if g.reason == pb.GOODBYE_REASON_RUN_FINISHED else "served"
        return None

    # ---------------------------------------------------------------------------- a step
    def _answer(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply | None:
        """The reply to one StepRequest (filled into ``into`` when given), or None when the fault
        plan drops it."""
        f = self.faults
        if f.kill_at_team_step is not None and req.team_step >= f.kill_at_team_step:
            log.warning("fault plan: killing this agent at team step %d", req.team_step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        if f.drop_fraction > 0 and self._drop_rng.random() < f.drop_fraction:
            self.stats.dropped += 1
            return None
        t0 = time.perf_counter()
        reply = self._decide(req, into)
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

    def _decide(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply:
        """Decide one step from the request's (or the sensor's) inputs, into ``into`` when given;
        any unusable input gives the fallback action."""
        p = self.policy
        reply = pb.StepReply() if into is None else into
        reply.episode_id = req.episode_id
        reply.step = req.step
        mask: np.ndarray | None = None
        try:
            if self.sensor is not None:
                ctx = FieldStep(p.agent_id, p.obs_dim, p.n_actions, req.episode_id, req.step)
                reading = as_reading(self.sensor(ctx), p.obs_dim, p.n_actions)
                obs, mask = reading.obs, reading.mask
                self._last_mask = mask
                for k, v in reading.report.items():
                    reply.report[k] = v
            else:
                if req.HasField("previous_action"):
                    # What the team really applied (the fallback after a miss) feeds prev_action.
                    p.record_action(int(req.previous_action))
                # The mask first: a bad observation is then answered under this step's mask.
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
                self._last_mask = mask
                obs = wire.decode(
                    req.observation, name="observation", dtype=pb.DTYPE_FLOAT32, shape=(p.obs_dim,)
                )
            # Both inputs above refuse NaN and inf (as_reading, wire.decode): one screen is enough.
            # The network's masked argmax is legal; the rule only guards against a broken graph.
            action = int(p.act(obs, mask, known_finite=True).action)
            reply.action = legal_action(action, p.fallback_action, p.n_actions, mask)
        except (WireError, RuntimeFailure, ValueError) as e:  # ValueError: PolicyInputError
            self.stats.bad_requests += 1
            reply.action = substitute(p.fallback_action, p.n_actions, mask)
            log.warning(
                "step %d: %s; answering with the legal-action rule's action %d",
                req.step,
                e,
                reply.action,
            )
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
            if self._heard_once:
                self.stats.silences_ended += 1
                log.info("coordinator heard again: acting on decisions")
            else:
                log.info("coordinator heard: acting on decisions")
        self._heard_once = True

    def held_action(self) -> int:
        """The action the agent holds while the coordinator is away: the legal-action rule under
        the most recent mask it saw (the fallback action when that mask allows it)."""
        p = self.policy
        return substitute(p.fallback_action, p.n_actions, self._last_mask)

    def _hold_fallback(self, why: str) -> None:
        action = self.held_action()
        if not self._holding:
            self._holding = True
            log.warning(
                "holding the fallback action (by the legal-action rule: %d): %s", action, why
            )
        self.stats.fallbacks_held += 1
        if self.actuator is not None:
            p = self.policy
            self._actuate(
                FieldStep(p.agent_id, p.obs_dim, p.n_actions, 0, 0, is_fallback=True), action
            )

    def _watchdog(self) -> None:
        """Hold the fallback when nothing came from the coordinator for ``watchdog_s``."""
        while not self._stop.wait(self.watchdog_s / 4):
            quiet = time.monotonic() - self._last_heard
            if quiet > self.watchdog_s and (not self._holding or self.actuator is not None):
                self._hold_fallback(f"coordinator quiet for {quiet:.2f} s")
                self._last_heard = time.monotonic()  # re-actuate at most once per period


class _LaneCarrier:
    """Join, steps and Leave on the coordinator's step lane alone: no gRPC in this process."""

    # How long a Leave may take on `stop` before the lane is cut.
    LEAVE_GRACE_S = 1.0

    def __init__(self, runner: AgentRunner) -> None:
        assert runner.step_lane_address is not None
        self.r = runner
        self.host, self.port = runner.step_lane_address

    def session(self) -> str:
        r = self.r
        client = r.open_lane(self.host, self.port)
        if isinstance(client, str):
            return client
        try:
            join = r.join_request()
            join.token = r.token
            return r.serve_lane(client, pb.AgentMessage(join=join))
        finally:
            client.close()

    def stop(self) -> None:
        client = self.r.lane
        if client is not None:  # else serve_lane sees the stop flag before it sends anything
            threading.Thread(
                target=self._leave_then_cut, args=(client,), daemon=True, name="agent-leave"
            ).start()

    def _leave_then_cut(self, client: LaneClient) -> None:
        """Say leave (the coordinator frees the seat as "left" and closes the lane, which ends
        the session); cut the lane if that has not happened within the grace."""
        cut = threading.Timer(self.LEAVE_GRACE_S, client.interrupt)
        cut.daemon = True
        cut.start()
        leave = pb.AgentMessage(leave=pb.LeaveRequest(reason="agent stopping"))
        try:
            client.send(leave, lock_timeout_s=self.LEAVE_GRACE_S)
        except (OSError, TimeoutError):
            client.interrupt()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------- the CLI
DESCRIPTION = """\
Run one agent of a team on this device: load its ONNX graph from the artifact,
dial the coordinator, and act greedily from this device's own inputs. Reconnects
with backoff and holds the fallback action while the coordinator is away.

Give the coordinator's gRPC port (--coordinator), or its step lane alone
(--step-lane-address: Join, steps and Leave on the lane, and no gRPC in this process).

example:
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator 10.0.0.2:50051
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --step-lane-address 10.0.0.2:50052
  qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator ground:50051 \\
      --sensor examples.field_plugin:read_sensors --actuator examples.field_plugin:actuate
"""


def build_parser() -> argparse.ArgumentParser:
    """qmix-agent's flags: the fields of `AgentConfig`."""
    p = settings.build_parser(AgentConfig, "qmix-agent", DESCRIPTION, titles=CONFIG_GROUPS)
    p.add_argument("--fault-kill-at-step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-stall-at-step", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fault-stall-ms", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fault-drop-fraction", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--fault-seed", type=int, default=0, help=argparse.SUPPRESS)
    return p


def client_security(args: AgentConfig) -> tuple[ClientTls | None, str | None]:
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
        # Read and check the files now: a config error, not a runtime one (an unusable file would
        # otherwise only fail each handshake, and the agent would retry forever). Neither step
        # needs grpc, so a lane-only agent over TLS stays without gRPC (10 to 16 MiB less
        # resident memory).
        tls.read_pem()
        tls.ssl_context()
    if args.token and args.token_file:
        raise SecurityConfigError("give --token or --token-file, not both")
    token = read_token_file(args.token_file) if args.token_file else args.token
    for address in (args.coordinator, args.step_lane_address):
        if address:
            require_secure_or_loopback(
                host_of(address), tls is not None, args.allow_insecure, "--tls-ca"
            )
    return tls, token


def load_policy(artifacts: str, agent_id: str, public_key: str | None) -> PolicyLike:
    """Load the agent's verified ONNX policy (artifact hash/signature checked before the session)."""
    from ..policy import AgentPolicy

    policy: PolicyLike = AgentPolicy.load(artifacts, agent_id, public_key=public_key)
    return policy


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, ns = settings.parse(AgentConfig, build_parser(), argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s {args.agent} %(name)s: %(message)s",
    )
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
            kill_at_team_step=ns.fault_kill_at_step,
            stall_at_team_step=ns.fault_stall_at_step,
            stall_ms=ns.fault_stall_ms,
            drop_fraction=ns.fault_drop_fraction,
            seed=ns.fault_seed,
        ),
        tls=tls,
        token=token,
        step_lane=args.step_lane,
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
