"""The field agent's own loop: its rate, overruns, stale sensors, the safety mask, mission control's
schedule, and each choice for a lost coordinator. Driven on a simulated clock (no sleeps)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from qmix_edge.runtime.agent.autonomous import (
    AutonomousLoop,
    LoopOutcome,
    LoopSettings,
    Mission,
    Why,
)
from qmix_edge.runtime.field import FieldStep, SensorReading


class SimClock:
    """Simulated time: waiting jumps ahead; a plug-in may spend time with `spend`."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def wait_until(self, t: float, stop: threading.Event) -> None:
        self.t = max(self.t, t)

    def spend(self, s: float) -> None:
        self.t += s


@dataclass
class Result:
    action: int


@dataclass
class CountingPolicy:
    """Picks the allowed action with the highest index; counts resets and what it was told."""

    agent_id: str = "agent_0"
    obs_dim: int = 2
    n_actions: int = 4
    fallback_action: int = 1
    resets: int = 0
    acts: int = 0
    recorded: list[int] = field(default_factory=list)

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None, **kw: Any) -> Result:
        self.acts += 1
        allowed = np.ones(self.n_actions, bool) if mask is None else mask
        return Result(int(np.flatnonzero(allowed)[-1]))

    def record_action(self, action: int) -> None:
        self.recorded.append(action)

    def reset(self) -> None:
        self.resets += 1


class Device:
    """Sensor and actuator plug-ins of a simulated device."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.applied: list[tuple[float, int, bool]] = []
        self.mask: np.ndarray | None = None
        self.age = 0.0
        self.fail = False
        self.slow: dict[int, float] = {}
        self.over_at: int | None = None
        self.reads = 0

    def sensor(self, ctx: FieldStep) -> SensorReading:
        self.reads += 1
        self.clock.spend(self.slow.pop(self.reads, 0.0))
        if self.fail:
            raise OSError("sensor bus timeout")
        return SensorReading(
            obs=np.zeros(2, np.float32),
            mask=self.mask,
            time=self.clock.now() - self.age,
            episode_over=self.over_at == ctx.step,
        )

    def actuator(self, ctx: FieldStep, action: int) -> None:
        self.applied.append((self.clock.now(), action, ctx.is_fallback))


def make(
    settings: LoopSettings, mission: Mission | None = None, **kw: Any
) -> tuple[AutonomousLoop, CountingPolicy, Device, SimClock, list[Any]]:
    clock = SimClock()
    dev = Device(clock)
    pol = CountingPolicy()
    ticks: list[Any] = []
    loop = AutonomousLoop(
        pol,
        dev.sensor,
        dev.actuator,
        settings,
        mission=mission,
        clock=clock,
        on_tick=ticks.append,
        **kw,
    )
    return loop, pol, dev, clock, ticks


def test_ticks_at_its_own_rate_and_decides_every_tick() -> None:
    loop, pol, dev, _clock, _ticks = make(LoopSettings(rate_hz=50, autostart=True))
    assert loop.run(max_ticks=10) is LoopOutcome.TICKS_DONE
    times = [t for t, _, _ in dev.applied]
    assert np.allclose(np.diff(times), 0.02)
    assert pol.acts == 10 and [a for _, a, _ in dev.applied] == [3] * 10
    assert loop.stats.overruns == 0 and loop.stats.decisions == 10


def test_an_overrun_is_counted_and_missed_ticks_are_skipped_not_bunched() -> None:
    loop, _, dev, _, ticks = make(LoopSettings(rate_hz=50, autostart=True))
    dev.slow = {3: 0.05}  # the third reading takes 2.5 periods
    loop.run(max_ticks=6)
    assert loop.stats.overruns == 1 and [t.overrun for t in ticks].count(True) == 1
    assert loop.stats.skipped_ticks == 2
    starts = [t.t for t in ticks]
    grid = (np.array(starts) - starts[0]) / 0.02
    assert np.allclose(grid, np.round(grid))  # every tick still on the 50 Hz grid
    assert np.all(np.diff(starts) > 0)


def test_a_stale_or_failing_sensor_gives_the_legal_fallback() -> None:
    loop, pol, dev, _clock, ticks = make(
        LoopSettings(rate_hz=50, stale_after_s=0.1, autostart=True)
    )
    dev.mask = np.array([True, False, True, False])  # the fallback (1) is masked
    loop.run(max_ticks=1)
    dev.age = 0.5
    loop.run(max_ticks=1)
    dev.age, dev.fail = 0.0, True
    loop.run(max_ticks=1)
    assert [t.why for t in ticks] == [Why.DECIDED, Why.STALE, Why.STALE]
    assert [a for _, a, _ in dev.applied] == [2, 0, 0]  # lowest allowed under the last mask
    assert [f for _, _, f in dev.applied] == [False, True, True]
    assert loop.stats.stale == 2 and pol.recorded == [0, 0]


def test_the_safety_mask_is_anded_and_an_empty_one_falls_back_without_raising() -> None:
    forbid: dict[str, np.ndarray] = {"m": np.array([True, True, True, False])}
    loop, _, dev, _, ticks = make(
        LoopSettings(rate_hz=50, autostart=True), safety=lambda ctx, r: forbid["m"]
    )
    loop.run(max_ticks=1)
    forbid["m"] = np.zeros(4, bool)
    loop.run(max_ticks=1)
    assert [a for _, a, _ in dev.applied] == [2, 1]  # 3 forbidden; then the fallback rule
    assert [(t.safety_limited, t.safety_blocked) for t in ticks] == [(True, False), (True, True)]
    assert loop.stats.safety_limited == 2 and loop.stats.safety_blocked == 1


def test_a_safety_plug_in_that_raises_forbids_everything_for_that_tick() -> None:
    def broken(ctx: FieldStep, r: SensorReading) -> np.ndarray:
        raise RuntimeError("lidar offline")

    loop, _, dev, _, ticks = make(LoopSettings(rate_hz=50, autostart=True), safety=broken)
    loop.run(max_ticks=2)
    assert [a for _, a, _ in dev.applied] == [1, 1] and ticks[0].safety_blocked


def test_mission_control_starts_pauses_and_ends_episodes_at_agreed_times() -> None:
    mission = Mission()
    loop, pol, _dev, clock, ticks = make(LoopSettings(rate_hz=10), mission=mission)
    t0 = clock.now()
    mission.start(7, at=t0 + 0.25)
    mission.pause(at=t0 + 0.55)
    mission.resume(at=t0 + 0.75)
    mission.end(at=t0 + 0.95)
    loop.run(max_ticks=12)
    whys = [t.why for t in ticks]
    assert (
        whys
        == [Why.IDLE] * 3 + [Why.DECIDED] * 3 + [Why.IDLE] * 2 + [Why.DECIDED] * 2 + [Why.IDLE] * 2
    )
    assert pol.resets == 1  # a pause keeps the recurrent state
    assert [t.step for t in ticks if t.why is Why.DECIDED] == [0, 1, 2, 3, 4]
    assert {t.episode_id for t in ticks if t.why is Why.DECIDED} == {7}


def test_the_device_ends_its_episode_on_the_sensors_word_or_the_step_limit() -> None:
    mission = Mission()
    loop, pol, dev, clock, ticks = make(LoopSettings(rate_hz=10, episode_limit=3), mission=mission)
    mission.start(1, at=clock.now())
    loop.run(max_ticks=5)
    assert [t.why for t in ticks] == [Why.DECIDED] * 3 + [Why.IDLE] * 2
    dev.over_at = 1
    mission.start(2, at=clock.now())
    loop.run(max_ticks=3)
    assert [t.why for t in ticks[5:]] == [Why.DECIDED, Why.DECIDED, Why.IDLE]
    assert pol.resets == 2


@pytest.mark.parametrize("choice", ["continue", "hold", "stop"])
def test_each_choice_when_mission_control_is_lost(choice: str) -> None:
    mission = Mission()
    loop, _pol, dev, clock, ticks = make(
        LoopSettings(rate_hz=10, on_coordinator_loss=choice, loss_after_s=0.22),  # type: ignore[arg-type]
        mission=mission,
    )
    mission.start(1, at=clock.now())
    mission.link(False, at=clock.now() + 0.05)
    outcome = loop.run(max_ticks=6)
    whys = [t.why for t in ticks]
    if choice == "continue":
        assert outcome is LoopOutcome.TICKS_DONE and whys == [Why.DECIDED] * 6
    elif choice == "hold":
        assert whys == [Why.DECIDED] * 3 + [Why.LOST_HOLD] * 3
        assert [f for _, _, f in dev.applied][-3:] == [True, True, True]
    else:
        assert outcome is LoopOutcome.LOST and whys == [Why.DECIDED] * 3
    mission.link(True, at=clock.now())
    if choice != "stop":
        loop.run(max_ticks=1)
        assert ticks[-1].why is Why.DECIDED


def test_stop_returns_after_the_tick_in_flight() -> None:
    loop, _, dev, _, _ = make(LoopSettings(rate_hz=50, autostart=True))
    original = dev.actuator

    def stop_on_second(ctx: FieldStep, action: int) -> None:
        original(ctx, action)
        if len(dev.applied) == 2:
            loop.stop()

    loop.actuator = stop_on_second
    assert loop.run() is LoopOutcome.STOPPED and len(dev.applied) == 2


def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        LoopSettings(rate_hz=0)
    with pytest.raises(ValueError, match="on_coordinator_loss"):
        LoopSettings(rate_hz=10, on_coordinator_loss="panic")  # type: ignore[arg-type]


def test_a_staged_policy_takes_over_at_the_named_episode_start() -> None:
    mission = Mission()
    loop, old, _, clock, ticks = make(LoopSettings(rate_hz=10), mission=mission)
    new = CountingPolicy(fallback_action=1)
    switched: list[int] = []
    mission.start(1, at=clock.now())
    loop.run(max_ticks=2)
    loop.switch_at(2, new, lambda: switched.append(loop.episode or 0))
    loop.run(max_ticks=2)  # still episode 1: the old policy decides
    mission.start(2, at=clock.now())
    loop.run(max_ticks=2)
    assert (old.acts, new.acts) == (4, 2)
    assert switched == [2] and new.resets == 1
    assert [t.episode_id for t in ticks] == [1, 1, 1, 1, 2, 2]


def test_the_loop_ticks_at_the_agreed_instant_of_a_schedule_change() -> None:
    mission = Mission()
    loop, _, _, clock, ticks = make(LoopSettings(rate_hz=10), mission=mission)
    start = clock.now() + 0.237  # between two ticks of the 10 Hz grid
    mission.start(1, at=start)
    loop.run(max_ticks=5)
    decided = [t.t for t in ticks if t.why is Why.DECIDED]
    assert decided[0] == pytest.approx(start)  # not at the next grid tick (+0.3)
    assert np.allclose(np.diff(decided), 0.1)  # and the grid goes on from there


def test_the_example_geofence_forbids_leaving_the_square_and_allows_staying() -> None:
    from examples import field_plugin

    ctx = FieldStep("fence_test", 4, 5, 1, 0)
    reading = field_plugin.read_sensors(ctx)
    assert field_plugin.geofence(ctx, reading).all()  # at the centre every move stays inside
    for _ in range(10):  # push right to the fence
        field_plugin.actuate(ctx, 2)
    allowed = field_plugin.geofence(ctx, reading)
    assert allowed[0] and not allowed[2]  # stay allowed, a step further right forbidden
