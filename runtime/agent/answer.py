"""How one agent answers a step: decide from its own inputs, keep to the legal-action rule, and hold
the fallback while the coordinator is quiet (the watchdog).

`StepAnswerer` owns what happens between a StepRequest's arrival and its StepReply, whichever
carrier brought it: the inputs (the request's observation and mask, or in field mode the sensor
plug-in's reading), the greedy decision, the one legal-action rule (`qmix_edge.runtime.legal`) for
anything unusable, and the actuator plug-in in field mode. It also owns what the device does when
no decision comes: the held action (the rule under the most recent mask) and the watchdog that
actuates it after a silence.

`StepAnswerer.answer` is the public seam around answering one step: a subclass may wrap it (the
fault-injecting agent of qmix-eval, `qmix_edge.runtime.eval.faulty_agent`, does) and hands itself
to `AgentRunner` as its ``answerer``.

Base install only: must not import torch (nor grpc).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import wire
from ..errors import RuntimeFailure, WireError
from ..field import Actuator, FieldStep, Sensor, as_reading
from ..legal import legal_action, substitute
from ..proto.v1 import team_pb2 as pb

log = logging.getLogger(__name__)


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
    silences_ended: int = 0
    """Times the coordinator was heard again after a silence (its first contact is not one)."""


class StepAnswerer:
    """Answers one agent's StepRequests from its policy (and, in field mode, its plug-ins)."""

    def __init__(
        self,
        policy: PolicyLike,
        *,
        sensor: Sensor | None = None,
        actuator: Actuator | None = None,
        stats: AgentStats | None = None,
    ) -> None:
        self.policy = policy
        self.sensor = sensor
        self.actuator = actuator
        self.stats = stats if stats is not None else AgentStats()
        self._last_heard = time.monotonic()
        self._holding = True  # nothing heard yet: the fallback is what the device does
        self._heard_once = False
        # The most recent action mask this agent saw (None: none yet, every action allowed): what
        # the watchdog's hold and a failed decision choose their legal substitute under.
        self._last_mask: np.ndarray | None = None

    # ---------------------------------------------------------------------------- a step
    def answer(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply | None:
        """The reply to one StepRequest (filled into ``into`` when given), timed and counted;
        None leaves the request unanswered (only a subclass does that)."""
        t0 = time.perf_counter()
        reply = self.decide(req, into)
        reply.decision_us = min(int((time.perf_counter() - t0) * 1e6), 2**32 - 1)
        self.stats.steps += 1
        return reply

    def decide(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply:
        """Decide one step from the request's (or the sensor's) inputs, into ``into`` when given;
        any unusable input gives the legal-action rule's action, marked ``is_fallback``."""
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

    # ---------------------------------------------------------------- silence and the hold
    def heard(self) -> None:
        """The coordinator was heard (any message): act on decisions again."""
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

    def hold_fallback(self, why: str) -> None:
        """Hold `held_action` (actuated in field mode) because ``why``."""
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

    def watch(self, stop: threading.Event, watchdog_s: float) -> None:
        """Until ``stop``: hold the fallback when nothing came from the coordinator for
        ``watchdog_s`` (in field mode re-actuated once per period while the silence lasts)."""
        while not stop.wait(watchdog_s / 4):
            quiet = time.monotonic() - self._last_heard
            if quiet > watchdog_s and (not self._holding or self.actuator is not None):
                self.hold_fallback(f"coordinator quiet for {quiet:.2f} s")
                self._last_heard = time.monotonic()  # re-actuate at most once per period
