"""``qmix-eval --field``: the team as it flies in the field, each agent on its own clock, against
a real-time simulator of its world, beside the lockstep reference on the same seeds.

Every scenario is a whole mission of ``--episodes`` episodes: one ``qmix-coordinator --mode
mission`` (mission control: agreed starts, telemetry, the agents' records), one ``qmix-agent
--rate-hz`` process per agent reading and acting through the simulator's plug-ins
(`field_sim`), and the world (`FieldSimulator`) starting each episode at the instant mission
control announced. The scenarios:

- ``own_clocks``: nothing in the way; every agent on its own clock.
- ``link``: the link between every device and its world delays, jitters and loses datagrams
  (`UdpLinkProxy`, ``--field-delay-ms``, ``--field-jitter-ms``, ``--field-loss``).
- ``coordinator_killed``: mission control is killed (SIGKILL) one step into the middle episode
  and restarted with ``--resume`` after ``--field-restart-after-ms``: the agents fly on.

No torch here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..agent.config import AgentConfig
from ..artifact import Manifest
from ..coordinator.config import CoordinatorConfig
from ..errors import RuntimeFailure
from ..mission_records import MissionEvent, TelemetryReport
from ..records import RunEnd, RunStart, read_records
from .config import EvalConfig
from .field_report import build_field_report, field_summary_text, write_field_report
from .field_sim import ADDRESS_ENV, FieldEpisode, FieldSimulator, MissionStarts
from .launcher import POLL_S, agent_command, coordinator_command, last_error_line, wait_for_ports
from .link_proxy import LinkShape, UdpLinkProxy
from .reference import run_reference

log = logging.getLogger(__name__)

SCENARIOS: tuple[str, ...] = ("own_clocks", "link", "coordinator_killed")
SENSOR = "qmix_edge.runtime.eval.field_sim:sensor"
ACTUATOR = "qmix_edge.runtime.eval.field_sim:actuator"


class FieldMission:
    """One scenario's processes, world and link (see the module docstring); `run` plays it."""

    def __init__(self, cfg: EvalConfig, scenario: str, agent_ids: Sequence[str], workdir: Path):
        from ..coordinator import TeamSpec, make_team_env

        self.cfg, self.scenario, self.agent_ids = cfg, scenario, list(agent_ids)
        self.workdir = workdir / scenario
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.record = self.workdir / "mission.jsonl"
        self.record.unlink(missing_ok=True)
        team = TeamSpec.from_artifacts(cfg.artifacts)
        self.env = make_team_env(team, cfg.env, cfg.episode_limit)
        self.limit = int(self.env.spec.episode_limit)
        manifest = Manifest.load(cfg.artifacts)
        fallbacks = [manifest.agent(a).fallback_action for a in self.agent_ids]
        self.sim = FieldSimulator(
            self.env,
            self.agent_ids,
            fallbacks,
            rate_hz=cfg.field_rate_hz,
            seed=cfg.seed,
            episodes=cfg.episodes,
        )
        self.proxy: UdpLinkProxy | None = None
        if scenario == "link":
            shape = LinkShape(
                cfg.field_delay_ms / 1000, cfg.field_jitter_ms / 1000, cfg.field_loss, cfg.seed
            )
            self.proxy = UdpLinkProxy(self.sim.address, shape).start()
        self.port = 0
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self.kill_at: float | None = None
        self.restart_at: float | None = None

    def _log(self, name: str) -> IO[bytes]:
        f = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(f)
        return f

    def why(self, name: str) -> str:
        for f in self._logs:
            f.flush()
        path = self.workdir / f"{name}.log"
        return f"{last_error_line(path)} (full log: {path})"

    def start_coordinator(self, resume: bool) -> None:
        cfg = self.cfg
        port_file = self.workdir / "coordinator.port"
        port_file.unlink(missing_ok=True)
        config = CoordinatorConfig(
            artifacts=str(cfg.artifacts),
            mode="mission",
            episodes=cfg.episodes,
            seed=cfg.seed,
            episode_limit=self.limit,
            step_period_ms=max(1, round(1000 / cfg.field_rate_hz)),
            start_lead_ms=cfg.field_lead_ms,
            team_wait_s=cfg.team_wait_s,
            record=str(self.record),
            resume=resume,
            port=self.port,
            port_file=str(port_file),
            step_lane=False,
        )
        self.coordinator = subprocess.Popen(
            coordinator_command(config), stdout=subprocess.DEVNULL, stderr=self._log("coordinator")
        )
        (self.port,) = wait_for_ports(
            self.coordinator,
            [port_file],
            cfg.coordinator_start_s,
            f"{self.scenario}: mission control",
            lambda: self.why("coordinator"),
        )

    def start_agents(self) -> None:
        cfg = self.cfg
        world = self.proxy.address if self.proxy is not None else self.sim.address
        env = {**os.environ, ADDRESS_ENV: f"{world[0]}:{world[1]}"}
        for agent in self.agent_ids:
            config = AgentConfig(
                artifacts=str(cfg.artifacts),
                agent=agent,
                coordinator=f"127.0.0.1:{self.port}",
                backoff_max_s=cfg.agent_backoff_max_s,
                sensor=SENSOR,
                actuator=ACTUATOR,
                rate_hz=cfg.field_rate_hz,
                episode_limit=self.limit,
                record=str(self.workdir / f"{agent}.ticks.jsonl"),
            )
            (self.workdir / f"{agent}.ticks.jsonl").unlink(missing_ok=True)
            self.agents[agent] = subprocess.Popen(
                agent_command(config), stdout=subprocess.DEVNULL, stderr=self._log(agent), env=env
            )

    def run(self) -> list[FieldEpisode]:
        """Play the mission; raises `RuntimeFailure` naming the failing process."""
        cfg = self.cfg
        self.start_coordinator(resume=False)
        self.start_agents()
        episodes: list[FieldEpisode] = []
        failed: list[BaseException] = []

        def world() -> None:
            try:
                episodes.extend(self.sim.run(MissionStarts(self.record)))
            except BaseException as e:  # reported by run()
                failed.append(e)

        thread = threading.Thread(target=world, daemon=True, name=f"world-{self.scenario}")
        thread.start()
        deadline = time.monotonic() + cfg.timeout_s
        if self.scenario == "coordinator_killed":
            middle = cfg.episodes // 2
            if not self.sim.wait_for_step(middle, 1, cfg.timeout_s):
                raise RuntimeFailure(f"the world never reached episode {middle}")
            assert self.coordinator is not None
            self.coordinator.send_signal(signal.SIGKILL)
            self.coordinator.wait()
            self.kill_at = time.monotonic()
            self.sim.stop_event.wait(cfg.field_restart_after_ms / 1000)
            self.restart_at = time.monotonic()
            self.start_coordinator(resume=True)
        while thread.is_alive():
            thread.join(POLL_S * 10)
            for name, p in [("coordinator", self.coordinator), *self.agents.items()]:
                if p is not None and p.poll() not in (None, 0):
                    raise RuntimeFailure(
                        f"{self.scenario}: {name} exited with {p.returncode}: {self.why(name)}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeFailure(
                    f"{self.scenario}: not finished within {cfg.timeout_s:g} s (--timeout-s)"
                )
        if failed:
            raise RuntimeFailure(f"{self.scenario}: the world failed: {failed[0]}") from failed[0]
        assert self.coordinator is not None
        with contextlib.suppress(subprocess.TimeoutExpired):  # close() stops it
            self.coordinator.wait(cfg.agents_exit_s)
        return episodes

    def facts(self, episodes: Sequence[FieldEpisode]) -> dict[str, Any]:
        """What this scenario's records say (the report's scenario entry, returns aside)."""
        recs = list(read_records(self.record)) if self.record.exists() else []
        starts = {
            r.episode_id: r.at for r in recs if isinstance(r, MissionEvent) and r.kind == "start"
        }
        telemetry: dict[str, dict[str, Any]] = {}
        for r in recs:
            if isinstance(r, TelemetryReport):
                telemetry[r.agent_id] = {
                    k: getattr(r, k)
                    for k in ("version", "decisions", "held", "stale", "overruns", "skipped_ticks")
                }
        first_tick: dict[int, dict[str, float]] = {}
        decided: dict[tuple[str, int], list[float]] = {}
        for agent in self.agent_ids:
            path = self.workdir / f"{agent}.ticks.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                t = json.loads(line)
                if t.get("step") == 0 and t.get("episode") and t["why"] != "idle":
                    first_tick.setdefault(int(t["episode"]), {}).setdefault(agent, float(t["t"]))
                if t["why"] == "decided" and t.get("episode"):
                    decided.setdefault((agent, int(t["episode"])), []).append(float(t["t"]))
        period = 1.0 / self.cfg.field_rate_hz
        gaps = {  # (agent, episode) -> the longest time between two decisions, in periods
            key: float(np.max(np.diff(ts))) / period if len(ts) > 1 else 0.0
            for key, ts in decided.items()
        }
        middle = self.cfg.episodes // 2 + 1  # the episode id mission control dies in
        spread_ms = [
            (max(ts.values()) - min(ts.values())) * 1000
            for ts in first_tick.values()
            if len(ts) == len(self.agent_ids)
        ]
        offset_ms = [
            abs(t - starts[ep]) * 1000
            for ep, ts in first_tick.items()
            if ep in starts
            for t in ts.values()
        ]
        return {
            "mission_control_starts": sum(isinstance(r, RunStart) for r in recs),
            "mission_finished": any(isinstance(r, RunEnd) and r.finished for r in recs),
            "agents": telemetry,
            "start_spread_ms": max(spread_ms, default=None),
            "max_decision_gap_periods": max(gaps.values(), default=None),
            "middle_episode_gap_periods": max(
                (g for (_, ep), g in gaps.items() if ep == middle), default=None
            ),
            "start_offset_ms": max(offset_ms, default=None),
            "link": None
            if self.proxy is None
            else {
                "delay_ms": self.cfg.field_delay_ms,
                "jitter_ms": self.cfg.field_jitter_ms,
                "loss": self.cfg.field_loss,
                "forwarded": self.proxy.counts.forwarded,
                "dropped": self.proxy.counts.dropped,
            },
            "coordinator_down_s": None
            if self.kill_at is None or self.restart_at is None
            else round(self.restart_at - self.kill_at, 3),
        }

    def close(self) -> None:
        self.sim.stop_event.set()
        procs = [p for p in [*self.agents.values(), self.coordinator] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(self.cfg.stop_grace_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(self.cfg.stop_grace_s)
        if self.proxy is not None:
            self.proxy.close()
        self.sim.close()
        self.env.close()
        for f in self._logs:
            f.close()


def evaluate_field(cfg: EvalConfig, workdir: Path) -> dict[str, Any]:
    """Every scenario of ``cfg.field_scenarios`` and the lockstep reference; the report is
    written to ``cfg.report`` (JSON, with the picture beside it) and returned."""
    agent_ids = list(Manifest.load(cfg.artifacts).agent_ids)
    reference = run_reference(cfg, agent_ids)
    scenarios: dict[str, dict[str, Any]] = {}
    for name in cfg.field_scenarios:
        log.info("field scenario %s", name)
        mission = FieldMission(cfg, name, agent_ids, workdir)
        try:
            episodes = mission.run()
        finally:
            mission.close()
        scenarios[name] = {
            "returns": [e.ret for e in episodes],
            "substituted": [dict(e.substituted) for e in episodes],
            **mission.facts(episodes),
        }
    report = build_field_report(cfg, agent_ids, reference, scenarios)
    report["workdir"] = str(workdir)
    write_field_report(report, cfg.report)
    return report


__all__ = ["SCENARIOS", "FieldMission", "evaluate_field", "field_summary_text"]
