"""``qmix-agent --rate-hz R``: one device running its agent on its own clock.

Puts the parts together: the policy (from the device's artifact store when ``--store`` is given,
installed through the store's checks on first use), the sensor, actuator and optional safety
plug-ins, the control loop (`AutonomousLoop`), the agent's own record, and, with
``--coordinator``, the link to mission control (schedule, telemetry, record upload, rollout).
Without ``--coordinator`` the device runs episodes back to back on its own. No torch.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..field import load_callable
from ..policy import AgentPolicy
from ..rollout import artifact_version
from ..security import ClientTls
from .autonomous import AutonomousLoop, LoopOutcome, LoopSettings, Mission, Tick
from .config import AgentConfig

log = logging.getLogger(__name__)


class FieldAgent:
    """The assembled field agent (see the module docstring); `run` blocks until stopped."""

    def __init__(self, cfg: AgentConfig, tls: ClientTls | None = None, token: str | None = None):
        assert cfg.rate_hz is not None and cfg.sensor is not None and cfg.actuator is not None
        self.cfg = cfg
        self.store = None
        folder = Path(cfg.artifacts)
        if cfg.store:
            from .store import ArtifactStore

            self.store = ArtifactStore(cfg.store, public_key=cfg.public_key)
            if self.store.current is None:
                self.store.activate(self.store.add_local(cfg.artifacts, check=self._check))
            folder = self.store.path()
            log.info("running artifact %s from the store %s", self.store.current, cfg.store)
        self.version = artifact_version(folder)
        policy = AgentPolicy.load(folder, cfg.agent, public_key=cfg.public_key)
        self.mission = Mission() if cfg.coordinator else None
        self.record = None
        if cfg.record:
            from .mission_link import LocalRecord

            self.record = LocalRecord(cfg.record)
        safety = load_callable(cfg.safety) if cfg.safety else None
        self.loop = AutonomousLoop(
            policy,
            load_callable(cfg.sensor),
            load_callable(cfg.actuator),
            LoopSettings(
                rate_hz=cfg.rate_hz,
                stale_after_s=cfg.stale_after_s,
                on_coordinator_loss=cfg.on_coordinator_loss,
                loss_after_s=cfg.loss_after_s,
                episode_limit=cfg.episode_limit,
                autostart=self.mission is None,
            ),
            mission=self.mission,
            safety=safety,
            on_tick=self._on_tick,
        )
        self.link = None
        if cfg.coordinator and self.mission is not None:
            from .mission_link import MissionLink

            self.link = MissionLink(
                cfg.coordinator,
                cfg.agent,
                self.mission,
                version=lambda: self.version,
                telemetry=self.telemetry,
                on_switch=self._on_switch,
                store=self.store,
                stage_check=self._check,
                record=self.record,
                tls=tls,
                token=token,
                backoff_max_s=cfg.backoff_max_s,
            )

    def _check(self, folder: Path) -> None:
        """A set is good for this device only if this agent's graph loads from it."""
        AgentPolicy.load(folder, self.cfg.agent, public_key=self.cfg.public_key)

    def _on_tick(self, tick: Tick) -> None:
        if self.record is not None:
            self.record.append(
                {
                    "t": round(tick.t, 6),
                    "episode": tick.episode_id,
                    "step": tick.step,
                    "action": tick.action,
                    "why": str(tick.why),
                    "us": tick.decision_us,
                    **({"overrun": True} if tick.overrun else {}),
                    **(
                        {"safety": "blocked" if tick.safety_blocked else "limited"}
                        if tick.safety_limited or tick.safety_blocked
                        else {}
                    ),
                }
            )

    def _on_switch(self, version: str, at_episode: int) -> None:
        if self.store is None:
            return
        folder = self.store.path(version)
        new = AgentPolicy.load(folder, self.cfg.agent, public_key=self.cfg.public_key)

        def switched() -> None:
            assert self.store is not None
            self.store.activate(version)
            self.version = version
            log.info("switched to artifact %s at episode %d", version[:12], at_episode)
            if self.link is not None:
                self.link.switched(version)

        self.loop.switch_at(at_episode, new, switched)

    def telemetry(self) -> dict[str, Any]:
        snap = self.loop.stats.snapshot()
        phase = "running" if self.loop.episode is not None else "idle"
        if self.mission is not None:
            phase = str(self.mission.state(time.monotonic())[0])
        return {
            **snap,
            "version": self.version,
            "episode_id": self.loop.episode or 0,
            "phase": phase,
        }

    def run(self) -> LoopOutcome:
        if self.link is not None:
            self.link.start()
        try:
            return self.loop.run()
        finally:
            if self.link is not None:
                self.link.stop()
            if self.record is not None:
                self.record.close()


def run_field(agent: FieldAgent) -> int:
    """qmix-agent's field loop: 0 when stopped (SIGTERM/SIGINT) or when mission control was lost
    and the deployment says stop (logged)."""
    cfg = agent.cfg

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.loop.stop()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    outcome = agent.run()
    log.info("agent %s field loop ends (%s): %s", cfg.agent, outcome, agent.loop.stats.snapshot())
    return 0
