"""The field agent's own control loop: sense, decide, act at its own rate, with or without
mission control.

Decentralized execution as QMIX means it: each device runs its agent greedily from its own
observations on its own clock; nothing on the decision path waits for the network. Every tick
(period 1/R on this device's monotonic clock):

1. what the team is doing comes from the `Mission` (episodes started, paused and ended by mission
   control at agreed times, converted to this clock), or with ``autostart`` from the device alone;
2. the sensor plug-in is read; a reading that raises, or is older than ``stale_after_s``, makes
   this tick's action the fallback (the legal-action rule);
3. the optional safety plug-in's mask is ANDed with the sensor's mask; if nothing is left the
   legal-action rule picks the action (never an exception);
4. the policy decides (recurrent state and previous action carried across this loop's own steps,
   reset at every episode start) and the actuator plug-in applies the action;
5. a tick that took longer than the period is an overrun; ticks that could not start on time are
   skipped (counted), never run late in a burst.

When mission control is lost (its link down for ``loss_after_s``) the deployment's choice applies:
``continue`` (the policy keeps flying the current episode: the decentralized default), ``hold``
(the fallback action every tick) or ``stop`` (the loop ends). No torch, no grpc here.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import RuntimeFailure
from ..field import Actuator, FieldStep, Safety, Sensor, as_reading
from ..legal import legal_action, substitute
from .answer import PolicyLike

log = logging.getLogger(__name__)

LossPolicy = Literal["continue", "hold", "stop"]
_SAME_INSTANT_S = 1e-6
"""A tick this close to a schedule change is at it (sums of periods are not exact in floats)."""
LOSS_POLICIES: tuple[str, ...] = ("continue", "hold", "stop")


class Phase(StrEnum):
    """What the team is doing, as this agent knows it."""

    IDLE = "idle"
    """No episode: the fallback action is held."""
    RUNNING = "running"
    """An episode is on: the policy decides."""
    PAUSED = "paused"
    """The episode is paused by mission control: the fallback is held, the episode's state kept."""


class Mission:
    """The team's schedule as this agent received it: thread-safe, written by the mission link
    (the connection to mission control) and read by the loop every tick.

    Times are on this agent's ``time.monotonic()`` clock: the link converts mission control's
    "at T" with its clock-offset estimate, so a start reaches every agent of the team at the same
    instant. Events apply in time order; one scheduled in the past applies at the next tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[float, int, str, int | None]] = []
        self._seq = 0
        self._phase = Phase.IDLE
        self._episode: int | None = None
        self._link_down_since: float | None = None

    def _add(self, at: float, kind: str, episode_id: int | None) -> None:
        with self._lock:
            self._seq += 1
            self._events.append((at, self._seq, kind, episode_id))
            self._events.sort()

    def start(self, episode_id: int, at: float) -> None:
        """Episode ``episode_id`` starts at ``at``."""
        self._add(at, "start", episode_id)

    def pause(self, at: float) -> None:
        self._add(at, "pause", None)

    def resume(self, at: float) -> None:
        self._add(at, "resume", None)

    def end(self, at: float) -> None:
        """The running episode ends at ``at``."""
        self._add(at, "end", None)

    def link(self, up: bool, at: float) -> None:
        """The link to mission control went up or down at ``at``."""
        with self._lock:
            if up:
                self._link_down_since = None
            elif self._link_down_since is None:
                self._link_down_since = at

    def lost_for(self, t: float) -> float:
        """Seconds the link has been down at ``t`` (0 while it is up)."""
        with self._lock:
            return 0.0 if self._link_down_since is None else max(0.0, t - self._link_down_since)

    def next_event(self) -> float | None:
        """When the earliest pending schedule change takes effect (None: nothing pending)."""
        with self._lock:
            return self._events[0][0] if self._events else None

    def state(self, t: float) -> tuple[Phase, int | None]:
        """(phase, episode id) at ``t``, after applying every event due by then."""
        with self._lock:
            while self._events and self._events[0][0] <= t + _SAME_INSTANT_S:
                _, _, kind, ep = self._events.pop(0)
                if kind == "start":
                    self._phase, self._episode = Phase.RUNNING, ep
                elif kind == "pause" and self._phase is Phase.RUNNING:
                    self._phase = Phase.PAUSED
                elif kind == "resume" and self._phase is Phase.PAUSED:
                    self._phase = Phase.RUNNING
                elif kind == "end":
                    self._phase = Phase.IDLE
            return self._phase, self._episode


class Clock(Protocol):
    """Time for the loop: a monotonic ``now`` and a wait that a stop request cuts short."""

    def now(self) -> float: ...

    def wait_until(self, t: float, stop: threading.Event) -> None: ...


class MonotonicClock:
    """The real clock (``time.monotonic``)."""

    def now(self) -> float:
        return time.monotonic()

    def wait_until(self, t: float, stop: threading.Event) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            stop.wait(delay)


@dataclass(frozen=True)
class LoopSettings:
    """How one device's loop runs."""

    rate_hz: float
    """Control rate: ticks per second."""
    stale_after_s: float = 0.5
    """A sensor reading older than this (by its ``time``) gives the fallback action."""
    on_coordinator_loss: LossPolicy = "continue"
    """What losing mission control does: continue the policy, hold the fallback, or stop."""
    loss_after_s: float = 1.0
    """The link is lost once it has been down this long."""
    episode_limit: int | None = None
    """Steps after which this device ends an episode on its own (None: mission control or the
    sensor's ``episode_over`` ends it)."""
    autostart: bool = False
    """No mission control: start episode 1 at once and the next one after each end."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_hz) and 0 < self.rate_hz <= 10_000):
            raise ValueError(f"rate_hz must be in (0, 10000]; found {self.rate_hz}")
        if self.on_coordinator_loss not in LOSS_POLICIES:
            raise ValueError(
                f"on_coordinator_loss must be one of {LOSS_POLICIES}; found {self.on_coordinator_loss!r}"
            )
        if self.stale_after_s <= 0 or self.loss_after_s < 0:
            raise ValueError("stale_after_s must be > 0 and loss_after_s >= 0")
        if self.episode_limit is not None and self.episode_limit < 1:
            raise ValueError(f"episode_limit must be >= 1; found {self.episode_limit}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz


class Why(StrEnum):
    """Why a tick's action is what it is."""

    DECIDED = "decided"
    """The policy decided (within the safety mask)."""
    IDLE = "idle"
    """No episode running (or paused): the fallback is held."""
    STALE = "stale"
    """The sensor failed or its reading was too old: the fallback."""
    LOST_HOLD = "lost_hold"
    """Mission control lost and the deployment holds: the fallback."""


@dataclass(frozen=True)
class Tick:
    """One control step, as the local record and the tests see it."""

    t: float
    episode_id: int | None
    step: int
    action: int
    why: Why
    decision_us: int = 0
    safety_limited: bool = False
    """The safety mask forbade an action the env mask allowed."""
    safety_blocked: bool = False
    """The safety mask left nothing allowed: the legal-action rule chose."""
    overrun: bool = False


@dataclass
class LoopStats:
    """What the loop did; `snapshot` is the telemetry sent to mission control."""

    ticks: int = 0
    decisions: int = 0
    held: int = 0
    stale: int = 0
    overruns: int = 0
    skipped_ticks: int = 0
    safety_limited: int = 0
    safety_blocked: int = 0
    episodes: int = 0
    decision_us: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )

    def snapshot(self) -> dict[str, Any]:
        us = np.asarray(self.decision_us, dtype=np.float64)
        return {
            "ticks": self.ticks,
            "decisions": self.decisions,
            "held": self.held,
            "stale": self.stale,
            "overruns": self.overruns,
            "skipped_ticks": self.skipped_ticks,
            "safety_limited": self.safety_limited,
            "safety_blocked": self.safety_blocked,
            "episodes": self.episodes,
            "decision_us_p50": float(np.percentile(us, 50)) if us.size else 0.0,
            "decision_us_p99": float(np.percentile(us, 99)) if us.size else 0.0,
        }


class LoopOutcome(StrEnum):
    STOPPED = "stopped"
    """A stop was requested (SIGTERM, or the caller)."""
    LOST = "lost"
    """Mission control was lost and the deployment says stop."""
    TICKS_DONE = "ticks_done"
    """The requested number of ticks ran (tests, benchmarks)."""


class AutonomousLoop:
    """One device's control loop (see the module docstring). `run` drives it on a `Clock`;
    `tick` is one step at a given time (the seam tests and benchmarks use)."""

    def __init__(
        self,
        policy: PolicyLike,
        sensor: Sensor,
        actuator: Actuator,
        settings: LoopSettings,
        *,
        mission: Mission | None = None,
        safety: Safety | None = None,
        clock: Clock | None = None,
        on_tick: Callable[[Tick], None] | None = None,
    ) -> None:
        if mission is None and not settings.autostart:
            raise RuntimeFailure(
                "an autonomous loop needs mission control (a Mission) or autostart=True"
            )
        self.policy, self.sensor, self.actuator = policy, sensor, actuator
        self.settings, self.mission, self.safety = settings, mission, safety
        self.clock = clock or MonotonicClock()
        self.on_tick = on_tick
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._episode: int | None = None
        self._ended: int | None = None  # an episode this device ended on its own
        self._step = 0
        self._last_mask: np.ndarray | None = None
        self._auto_next = 1
        self._switch: tuple[int, PolicyLike, Callable[[], None]] | None = None
        self._switch_lock = threading.Lock()

    def switch_at(
        self,
        episode_id: int,
        policy: PolicyLike,
        on_switched: Callable[[], None] = lambda: None,
    ) -> None:
        """Run ``policy`` from the start of episode ``episode_id`` on (a staged rollout); then call
        ``on_switched``. Thread-safe; a later call replaces an earlier one not yet done."""
        with self._switch_lock:
            self._switch = (episode_id, policy, on_switched)

    @property
    def episode(self) -> int | None:
        """The episode the loop is in (or last was in)."""
        return self._episode

    def stop(self) -> None:
        """Ask `run` to return after the tick in flight (thread- and signal-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------------------ schedule
    def _phase(self, t: float) -> tuple[Phase, int | None]:
        if self.mission is None:
            if self._ended is not None and self._ended == self._episode:
                self._auto_next += 1
            return Phase.RUNNING, self._auto_next
        phase, ep = self.mission.state(t)
        if phase is Phase.RUNNING and ep is not None and ep == self._ended:
            return Phase.IDLE, ep  # this device already ended it (episode limit, sensor)
        return phase, ep

    def run(self, max_ticks: int | None = None) -> LoopOutcome:
        """Tick at the configured rate until stopped (or ``max_ticks`` ran)."""
        period = self.settings.period_s
        next_t = self.clock.now()
        n = 0
        while not self._stop.is_set():
            if max_ticks is not None and n >= max_ticks:
                return LoopOutcome.TICKS_DONE
            tick = self.tick(next_t)
            n += 1
            if tick is None:
                return LoopOutcome.LOST
            next_t += period
            late = self.clock.now() - next_t
            if late > 0:  # whole periods missed: skip them, never run a burst of late ticks
                missed = int(late // period) + 1
                self.stats.skipped_ticks += missed
                next_t += missed * period
            event = self.mission.next_event() if self.mission is not None else None
            if event is not None and self.clock.now() <= event < next_t - _SAME_INSTANT_S:
                next_t = event  # tick at the agreed instant: the team starts together
            self.clock.wait_until(next_t, self._stop)
        return LoopOutcome.STOPPED

    # ---------------------------------------------------------------------------- one tick
    def tick(self, t: float) -> Tick | None:
        """One control step scheduled at ``t``; None when the loop must stop (mission control
        lost and the deployment says stop)."""
        s, p, st = self.settings, self.policy, self.stats
        started = self.clock.now()
        st.ticks += 1
        phase, ep = self._phase(t)
        down = self.mission.lost_for(t) if self.mission is not None else 0.0
        lost = down > 0 and down >= s.loss_after_s
        if lost and s.on_coordinator_loss == "stop":
            log.warning("mission control lost for %.1f s: stopping (on loss: stop)", down)
            return None
        if phase is Phase.RUNNING and ep != self._episode:
            self._episode, self._step, self._ended = ep, 0, None
            with self._switch_lock:
                switch, self._switch = self._switch, None
            if switch is not None and ep is not None and ep >= switch[0]:
                self.policy = p = switch[1]
                switch[2]()
            elif switch is not None:
                with self._switch_lock:
                    self._switch = self._switch or switch
            p.reset()
            st.episodes += 1
        if lost and s.on_coordinator_loss == "hold":
            return self._hold(t, started, Why.LOST_HOLD)
        if phase is not Phase.RUNNING:
            return self._hold(t, started, Why.IDLE)
        ctx = FieldStep(p.agent_id, p.obs_dim, p.n_actions, ep or 0, self._step)
        try:
            reading = as_reading(self.sensor(ctx), p.obs_dim, p.n_actions)
            if reading.time is not None and self.clock.now() - reading.time > s.stale_after_s:
                raise RuntimeFailure(
                    f"sensor reading is {self.clock.now() - reading.time:.3f} s old "
                    f"(limit {s.stale_after_s} s)"
                )
        except (
            Exception
        ) as e:  # the plug-in's failure is this tick's fallback, never the loop's end
            st.stale += 1
            log.debug("tick %d: %s; holding the fallback", self._step, e)
            out = self._hold(t, started, Why.STALE, advance=True)
            return out
        mask = reading.mask
        self._last_mask = mask
        limited = blocked = False
        if self.safety is not None:
            try:
                extra = self.safety(ctx, reading)
            except Exception:
                log.exception("the safety plug-in failed: every action forbidden this tick")
                extra = np.zeros(p.n_actions, dtype=bool)
            if extra is not None:
                extra = np.asarray(extra, dtype=bool).reshape(-1)
                if extra.shape != (p.n_actions,):
                    log.error(
                        "safety mask of shape %s; expected (%d,): all forbidden",
                        extra.shape,
                        p.n_actions,
                    )
                    extra = np.zeros(p.n_actions, dtype=bool)
                base = np.ones(p.n_actions, dtype=bool) if mask is None else mask
                combined = base & extra
                limited = bool((base & ~extra).any())
                blocked = not combined.any()
                mask = combined
        t0 = time.perf_counter()
        if blocked:
            action = substitute(p.fallback_action, p.n_actions, reading.mask)
            p.record_action(action)
            st.safety_blocked += 1
        else:
            action = legal_action(
                int(p.act(reading.obs, mask, known_finite=True).action),
                p.fallback_action,
                p.n_actions,
                mask,
            )
        us = int((time.perf_counter() - t0) * 1e6)
        st.decisions += 1
        st.decision_us.append(us)
        st.safety_limited += int(limited)
        self._actuate(ctx, action, fallback=blocked)
        tick = Tick(t, ep, self._step, action, Why.DECIDED, us, limited, blocked)
        self._step += 1
        if reading.episode_over or (s.episode_limit is not None and self._step >= s.episode_limit):
            self._ended = ep
        return self._finish(tick, started)

    def _hold(self, t: float, started: float, why: Why, *, advance: bool = False) -> Tick:
        p = self.policy
        action = substitute(p.fallback_action, p.n_actions, self._last_mask)
        self.stats.held += 1
        ctx = FieldStep(
            p.agent_id, p.obs_dim, p.n_actions, self._episode or 0, self._step, is_fallback=True
        )
        self._actuate(ctx, action, fallback=True)
        tick = Tick(t, self._episode, self._step, action, why)
        if advance:  # a stale step inside a running episode still uses up a step
            p.record_action(action)
            self._step += 1
            if (
                self.settings.episode_limit is not None
                and self._step >= self.settings.episode_limit
            ):
                self._ended = self._episode
        return self._finish(tick, started)

    def _actuate(self, ctx: FieldStep, action: int, *, fallback: bool) -> None:
        if fallback and not ctx.is_fallback:
            ctx = FieldStep(
                ctx.agent_id, ctx.obs_dim, ctx.n_actions, ctx.episode_id, ctx.step, True
            )
        try:
            self.actuator(ctx, action)
        except Exception:
            log.exception("the actuator plug-in failed for action %d", action)

    def _finish(self, tick: Tick, started: float) -> Tick:
        if self.clock.now() - started > self.settings.period_s:
            self.stats.overruns += 1
            tick = Tick(**{**tick.__dict__, "overrun": True})
        if self.on_tick is not None:
            self.on_tick(tick)
        return tick
