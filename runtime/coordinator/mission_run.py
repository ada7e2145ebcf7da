"""One mission, as ``qmix-coordinator --mode mission`` runs it: the episode schedule of a team
whose agents fly on their own clocks.

`MissionRun.run` waits for the team (up to ``--team-wait-s``), then for each episode announces its
start ``--start-lead-ms`` ahead, lets it last ``--episode-limit`` control periods (plus any time an
operator paused it), announces its end the same lead ahead, and goes on until ``--episodes`` ran
or a stop is requested (SIGTERM: the running episode ends now). Nothing here is on an agent's
decision path: when this process dies the agents keep flying the episode they are in (or hold, or
stop: their deployment's choice), and a restarted coordinator with ``--resume`` goes on numbering
episodes where its record left off. No torch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..mission_records import AgentRecordLine, MissionEvent, RolloutSwitched
from ..records import read_records
from .config import EXIT_INCOMPLETE_TEAM, EXIT_OK, CoordinatorConfig
from .mission import MissionControl
from .record import Recorder
from .sessions import Refusal

log = logging.getLogger(__name__)

_POLL_S = 0.1
"""Longest wait between looks at the schedule (an operator's pause or end changes it)."""

COUNTERS = ("decisions", "held", "stale", "overruns", "skipped_ticks", "safety_blocked")
"""The telemetry counters the closing summary and ``run_end`` carry per agent."""


@dataclass(frozen=True)
class MissionResume:
    """Where a mission recorded in a run record left off (`mission_resume_point`)."""

    next_index: int = 0
    """The index of its next episode: one past the last started (a started episode counts as
    done: its agents flew it to its end on their own even when mission control died in it)."""
    record_next_seq: Mapping[str, int] = field(default_factory=dict)
    """Per agent, the first line of its own record not stored yet (so nothing is stored twice)."""
    version: str | None = None
    """The artifact version the team switched to in its last rollout (None: none happened), which
    a restarted mission control accepts whatever set its ``--artifacts`` names."""


def mission_resume_point(path: str | Path) -> MissionResume:
    """Where the mission recorded in ``path`` left off (empty when the file does not exist)."""
    p = Path(path)
    if not p.exists():
        return MissionResume()
    last, next_seq, version = -1, dict[str, int](), None
    for rec in read_records(p):
        if isinstance(rec, MissionEvent) and rec.kind == "start":
            last = max(last, rec.episode_index)
        elif isinstance(rec, AgentRecordLine):
            next_seq[rec.agent_id] = max(next_seq.get(rec.agent_id, 0), rec.seq + 1)
        elif isinstance(rec, RolloutSwitched):
            version = rec.version
    return MissionResume(last + 1, next_seq, version)


@dataclass(frozen=True)
class MissionSummary:
    """What one mission did (the coordinator's closing lines and exit status)."""

    finished: bool
    episodes: int
    """Episodes started by this process."""
    first_index: int
    never_linked: tuple[str, ...]
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Agent id -> its last telemetry (version, decisions, overruns, ...)."""

    @property
    def exit_status(self) -> int:
        return EXIT_INCOMPLETE_TEAM if self.never_linked else EXIT_OK

    def stats(self) -> dict[str, dict[str, int]]:
        """Agent id -> the counters of `COUNTERS` (``run_end``'s stats)."""
        return {a: {k: int(t.get(k, 0)) for k in COUNTERS} for a, t in self.agents.items()}

    def lines(self, record: str | None = None) -> list[str]:
        outcome = "finished" if self.finished else "stopped"
        lines = [f"mission {outcome} after {self.episodes} episodes here"]
        for agent, t in self.agents.items():
            if not t:
                continue
            lines.append(
                f"{agent}: artifact {str(t.get('version', ''))[:12]}, "
                + ", ".join(f"{k} {int(t.get(k, 0))}" for k in COUNTERS)
            )
        if self.never_linked:
            lines.append(
                f"never linked: {', '.join(self.never_linked)} (start their qmix-agent --rate-hz "
                "--coordinator, or raise --team-wait-s)"
            )
            lines.append(f"exit status {EXIT_INCOMPLETE_TEAM}: the mission did not have its team")
        if record:
            lines.append(f"run record appended to {record}")
        return lines


class MissionRun:
    """The schedule of one mission on the coordinator's loop (see the module docstring)."""

    def __init__(
        self,
        control: MissionControl,
        config: CoordinatorConfig,
        recorder: Recorder,
        stop_event: asyncio.Event,
        *,
        first_index: int = 0,
    ) -> None:
        self.control, self.config, self.recorder = control, config, recorder
        self.stop_event = stop_event
        self.first_index = first_index
        self.duration_s = (config.episode_limit or 0) * config.step_period_ms / 1000.0
        self.lead_s = config.start_lead_ms / 1000.0
        self._ever_linked: set[str] = set()

    async def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when a stop was requested meanwhile."""
        if self.stop_event.is_set():
            return True
        try:
            await asyncio.wait_for(self.stop_event.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    def _note_links(self) -> None:
        self._ever_linked |= {a for a, s in self.control.status().items() if s.linked}

    async def _wait_for_team(self) -> None:
        c = self.control
        deadline = c.clock() + self.config.team_wait_s
        while c.clock() < deadline:
            self._note_links()
            if self._ever_linked >= set(c.agent_ids) or await self._pause(_POLL_S):
                return
        missing = sorted(set(c.agent_ids) - self._ever_linked)
        log.warning(
            "starting without %s: not linked after %g s (--team-wait-s)",
            ", ".join(missing),
            self.config.team_wait_s,
        )

    async def _fly_episode(self) -> bool:
        """Start one episode, wait out its length (pauses included), end it, and wait for the
        end instant (so the next start follows it); True if a stop came meanwhile."""
        c = self.control
        ep, _ = c.start_episode(self.lead_s)
        log.info("episode %d starts in %.0f ms", ep, self.lead_s * 1000)
        end_at = None
        while c.phase != "idle":  # an operator's END makes it idle early
            self._note_links()
            due = c.due_end(self.duration_s)
            left = due - c.clock()
            if left <= self.lead_s:
                end_at = self._end(max(0.0, left), at=due if left > 0 else None)
                log.info("episode %d ends in %.0f ms", ep, max(0.0, left) * 1000)
                break
            if await self._pause(min(_POLL_S, left - self.lead_s)):
                self._end(0.0)
                return True
        return end_at is not None and await self._pause(end_at - c.clock())

    def _end(self, lead_s: float, at: float | None = None) -> float | None:
        """End the episode ``lead_s`` from now (or at ``at``); None when an operator ended it
        meanwhile."""
        try:
            return self.control.end_episode(lead_s, at)
        except Refusal:
            return None

    async def run(self) -> MissionSummary:
        c, total = self.control, self.config.episodes
        await self._wait_for_team()
        done, stopped = 0, self.stop_event.is_set()
        while not stopped and (total == 0 or self.first_index + done < total):
            stopped = await self._fly_episode()
            done += 1
        self._note_links()
        finished = not stopped and total > 0 and self.first_index + done >= total
        status = c.status()
        summary = MissionSummary(
            finished=finished,
            episodes=done,
            first_index=self.first_index,
            never_linked=tuple(a for a in c.agent_ids if a not in self._ever_linked),
            agents={a: dict(s.telemetry) for a, s in status.items()},
        )
        self.recorder.write(
            "run_end",
            finished=finished,
            team_steps=done * (self.config.episode_limit or 0),
            stats=summary.stats(),
            never_joined=list(summary.never_linked),
            incomplete_team_episodes=0,
            failure=None,
            exit_status=summary.exit_status,
        )
        return summary
