"""qmix-agent's session loop: one agent of the team against one coordinator (protocol
qmix_edge.v1, the client side).

`AgentRunner` owns the agent's life with its coordinator: Join with the artifact's hash through
its carrier, handle each coordinator message (episode starts reset the recurrent state, step
requests go to the `StepAnswerer`), rejoin with exponential backoff and jitter when the
coordinator goes away (a rejoin starts from a clean recurrent state), hold the fallback action
while it is away (the answerer's watchdog), and stop on request.

Two carriers reach the coordinator (`qmix_edge.runtime.agent.carriers`):
- its step lane alone (``step_lane_address`` without a ``target``): Join, steps and Leave all
  travel on the lane, and this process never loads gRPC (about 15 MiB less resident memory);
- its gRPC port (``target``): Join and Leave over gRPC, steps on the step lane when the
  coordinator offers one, else on the gRPC Steps stream.

Base install only: must not import torch (nor qmix_edge.train / qmix_edge.export), nor grpc (the
gRPC carrier is imported only when a ``target`` is given).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from .. import wire
from ..errors import STATUS_CODES, JoinRefused
from ..field import Actuator, Sensor
from ..lane import LaneClient, parse_address
from ..proto.v1 import team_pb2 as pb
from ..security import ClientTls
from .answer import AgentStats, PolicyLike, StepAnswerer
from .carriers.contract import (
    FINISHED,
    SERVED,
    Carrier,
    Link,
    SessionEnd,
    SessionOutcome,
)
from .carriers.lane import LaneCarrier

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


class AnswererFactory(Protocol):
    """Builds the runner's `StepAnswerer` (`StepAnswerer` itself, or a subclass's constructor)."""

    def __call__(
        self,
        policy: PolicyLike,
        *,
        sensor: Sensor | None,
        actuator: Actuator | None,
        stats: AgentStats,
    ) -> StepAnswerer: ...


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
        seed: int | None = None,
        tls: ClientTls | None = None,
        token: str | None = None,
        step_lane: bool = True,
        step_lane_address: str | None = None,
        answerer: AnswererFactory = StepAnswerer,
    ) -> None:
        """``target``: the coordinator's gRPC ``HOST:PORT`` (None: join on the step lane alone,
        at ``step_lane_address``, and never load gRPC). ``tls``: dial over TLS (with a client
        certificate: mutual TLS). ``token``: this agent's bearer token (gRPC metadata, or the
        lane's Attach / JoinRequest field). ``step_lane``: with a ``target``, step on the
        coordinator's step lane when it offers one (False: always the gRPC Steps stream).
        ``step_lane_address``: ``HOST:PORT`` of the step lane; with a ``target``, dialled instead
        of the coordinator's host and the port its Join names (a port forward or proxy).
        ``answerer``: builds what answers each step (a subclass of `StepAnswerer` may wrap it)."""
        if target is None and step_lane_address is None:
            raise ValueError(
                "give the coordinator's gRPC address (target / --coordinator) or its step lane's "
                "address (step_lane_address / --step-lane-address); found neither"
            )
        if step_lane_address is not None and not step_lane:
            raise ValueError("a step lane address was given, but the step lane is turned off")
        self.policy = policy
        self.step_lane = step_lane
        self.target = target
        self.client_name = client_name or f"{socket.gethostname()}:{os.getpid()}"
        self.backoff = backoff or Backoff()
        self.watchdog_s = watchdog_s
        self.give_up_s = give_up_s
        self.stats = AgentStats()
        self.answerer = answerer(policy, sensor=sensor, actuator=actuator, stats=self.stats)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        link = Link(
            agent_id=policy.agent_id,
            tls=tls,
            token=token or "",
            step_lane_address=parse_address(step_lane_address) if step_lane_address else None,
            max_message_bytes=max_message_bytes,
            join_timeout_s=join_timeout_s,
        )
        self._carrier: Carrier
        if target is None:
            self._carrier = LaneCarrier(self, link)
        else:
            from .carriers.grpc import GrpcCarrier  # loads grpc: only agents that dial gRPC

            self._carrier = GrpcCarrier(self, link, target)

    # ---------------------------------------------------------------------------- control
    @property
    def stopping(self) -> bool:
        """`stop` was called (or the run is over)."""
        return self._stop.is_set()

    @property
    def lane(self) -> LaneClient | None:
        """The open step lane, whichever carrier opened it."""
        return self._carrier.lane

    def stop(self) -> None:
        """Leave at the next opportunity (thread-safe, signal-safe)."""
        self._stop.set()
        self._carrier.stop()

    def run(self) -> int:
        """Join, serve, rejoin. Returns 0 when the coordinator finished the run, 1 when it gave up
        reconnecting (``give_up_s``) or was stopped, 2 when the coordinator refused this agent.

        Receiving a step, deciding and replying happen on one thread without hand-offs."""
        watchdog = threading.Thread(
            target=self.answerer.watch,
            args=(self._stop, self.watchdog_s),
            daemon=True,
            name="agent-watchdog",
        )
        watchdog.start()
        try:
            return self._reconnect_loop()
        finally:
            self._stop.set()
            self._carrier.close()
            if self.answerer.actuator is not None:  # leave the device in its safe state
                self.answerer.hold_fallback("agent stopping")

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
                outcome = SessionOutcome(SessionEnd.REFUSED, f"join refused ({e.code_name})")
            if outcome.end is SessionEnd.FINISHED:
                return 0
            if outcome.end is SessionEnd.STOPPED or self._stop.is_set():
                break
            why = str(outcome)
            if outcome.end is SessionEnd.SERVED:
                attempt, quiet_since = 0, time.monotonic()
                why = "stream ended"
            self.answerer.hold_fallback(f"coordinator unreachable ({why})")
            if self.give_up_s > 0 and time.monotonic() - quiet_since > self.give_up_s:
                log.error("no coordinator for %.1f s; giving up", self.give_up_s)
                return 1
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            log.info("reconnecting in %.2f s (%s)", delay, why)
            if self._stop.wait(delay):
                break
        return 1

    # ------------------------------------------------------- the SessionHost (for carriers)
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

    def on_message(self, msg: pb.CoordinatorMessage) -> pb.AgentMessage | SessionOutcome | None:
        """Handle one coordinator message (either carrier): the message to answer with, the
        session's outcome when the message ends it (a goodbye), or None."""
        self.answerer.heard()
        kind = msg.WhichOneof("kind")
        if kind == "step_request":
            # The reply is built inside the message that carries it (no copy into a wrapper);
            # SetInParent: a reply whose fields are all zero is still a step_reply.
            out = pb.AgentMessage()
            reply = out.step_reply
            reply.SetInParent()
            return out if self.answerer.answer(msg.step_request, reply) is not None else None
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
                return SessionOutcome(SessionEnd.REFUSED, g.detail)
            log.info("coordinator says goodbye: %s (%s)", pb.GoodbyeReason.Name(g.reason), g.detail)
            return FINISHED if g.reason == pb.GOODBYE_REASON_RUN_FINISHED else SERVED
        return None
