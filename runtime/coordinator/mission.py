"""Mission control for field execution (protocol ``qmix_edge.v1.Mission``, protos/.../mission.proto).

In the field every agent runs its own loop; the coordinator is mission control, never on the
decision path: it starts, pauses, resumes and ends episodes for the whole team at agreed times
(on its clock; agents convert with their clock offset), collects telemetry and the agents' own
record lines (each line stored once, whatever the reconnections), and rolls out signed artifact
sets: the team switches at one named episode once every agent has staged the set, or not at all.

`MissionControl` holds that state and runs on the server's asyncio loop; its public methods may be
called from any thread. Its gRPC face is `qmix_edge.runtime.coordinator.mission_service`; the
episode schedule of a whole mission is `qmix_edge.runtime.coordinator.mission_run`. No torch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ..proto.v1 import mission_pb2 as mpb
from ..rollout import Offer, RolloutError, offer_for, read_chunk
from .sessions import Refusal

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
RecordFn = Callable[..., None]


@dataclass
class _Link:
    agent_id: str
    queue: asyncio.Queue[mpb.MissionCommand | None]
    version: str


@dataclass
class AgentStatus:
    """What mission control knows of one agent."""

    linked: bool = False
    version: str = ""
    telemetry: dict[str, Any] = field(default_factory=dict)
    last_heard: float | None = None
    record_next_seq: int = 0
    rollout: str = ""
    """The agent's last rollout report: ``staged``, ``failed: why`` or ``active``."""


@dataclass
class Rollout:
    """One offered artifact set and how far the team is with it."""

    offer: Offer
    folder: Path
    staged: set[str] = field(default_factory=set)
    switch_at: int | None = None
    """The episode at whose start the team switches (set once every agent staged it)."""
    cancelled: str = ""
    """Why the rollout was cancelled (an agent failed to verify or load it)."""


class MissionControl:
    """The team's schedule, telemetry, records and rollouts (see the module docstring)."""

    def __init__(
        self,
        team_id: str,
        agent_ids: Iterable[str],
        version: str,
        *,
        record: RecordFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_episode: int = 1,
        record_next_seq: Mapping[str, int] | None = None,
    ) -> None:
        """``first_episode``: the id of the first episode this process starts (a resumed mission
        goes on numbering where the record left off; ids are the run's episode index + 1).
        ``record_next_seq``: per agent, the first line of its own record not stored yet (a
        resumed mission's record already holds the others)."""
        self.team_id = team_id
        self.agent_ids = tuple(agent_ids)
        self.version = version
        """The artifact version the team runs (the sha256 of its manifest.json)."""
        self.clock = clock
        self._record = record
        self._lock = threading.RLock()  # `wait_for`'s predicate reads `status` under it
        self._links: dict[str, _Link] = {}
        seqs = record_next_seq or {}
        self._status = {a: AgentStatus(record_next_seq=seqs.get(a, 0)) for a in self.agent_ids}
        self._schedule: list[mpb.Schedule] = []
        self._next_episode = first_episode
        self._phase = "idle"
        self._started_at = 0.0
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self.rollout: Rollout | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.changed = threading.Condition(self._lock)
        """Notified on every change of status (tests and the CLI wait on it)."""

    # ------------------------------------------------------------------------ status (any thread)
    def status(self) -> dict[str, AgentStatus]:
        with self._lock:
            return {a: AgentStatus(**vars(s)) for a, s in self._status.items()}

    def wait_for(self, predicate: Callable[[MissionControl], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every change); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def _emit(self, record_type: str, **fields: Any) -> None:
        if self._record is not None:
            self._record(record_type, **fields)

    # --------------------------------------------------------------------- commands (any thread)
    def _broadcast(self, cmd: mpb.MissionCommand) -> None:
        loop = self._loop
        for link in list(self._links.values()):
            if loop is not None:
                loop.call_soon_threadsafe(link.queue.put_nowait, cmd)

    def _schedule_cmd(
        self, kind: int, episode_id: int, lead_s: float, at: float | None = None
    ) -> float:
        now = self.clock()
        if at is None:
            at = now + lead_s
        lead_s = at - now
        s = mpb.Schedule(kind=kind, episode_id=episode_id, at=at)  # type: ignore[arg-type]
        with self._lock:
            self._schedule.append(s)
            self.changed.notify_all()
        self._broadcast(mpb.MissionCommand(schedule=s))
        self._emit(
            "mission",
            kind=mpb.Schedule.Kind.Name(kind).lower(),
            episode_id=episode_id,
            at=at,
            time=time.time() + lead_s,
            episode_index=max(0, episode_id - 1),
        )
        return at

    @property
    def phase(self) -> str:
        """What mission control last scheduled: ``idle``, ``running`` or ``paused``."""
        with self._lock:
            return self._phase

    @property
    def episode(self) -> int:
        """The current (or last) episode's id; 0 before the first."""
        with self._lock:
            return self._next_episode - 1

    def due_end(self, duration_s: float) -> float:
        """When the current episode is due to end on mission control's clock: its start plus
        ``duration_s`` plus the time it spent paused (infinite while paused; now when idle)."""
        with self._lock:
            if self._phase == "idle":
                return self.clock()
            if self._paused_since is not None:
                return float("inf")
            return self._started_at + duration_s + self._paused_total

    def start_episode(self, lead_s: float = 0.5) -> tuple[int, float]:
        """Start the next episode for the whole team ``lead_s`` from now; (episode id, time)."""
        with self._lock:
            ep = self._next_episode
            self._next_episode += 1
            r = self.rollout
        if r is not None and r.switch_at == ep:
            self.version = r.offer.version
            self._emit("rollout_switched", version=r.offer.version, episode_id=ep)
        at = self._schedule_cmd(mpb.Schedule.START, ep, lead_s)
        with self._lock:
            self._phase, self._started_at = "running", at
            self._paused_since, self._paused_total = None, 0.0
        return ep, at

    def pause(self, lead_s: float = 0.0) -> float:
        """Pause the running episode for the whole team at ``lead_s`` from now."""
        with self._lock:
            if self._phase != "running":
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"nothing to pause: the team is {self._phase}",
                )
            self._phase = "paused"
            self._paused_since = self.clock() + lead_s
        return self._schedule_cmd(mpb.Schedule.PAUSE, self._next_episode - 1, lead_s)

    def resume(self, lead_s: float = 0.0) -> float:
        """Resume the paused episode at ``lead_s`` from now (its end moves by the pause)."""
        with self._lock:
            if self._phase != "paused" or self._paused_since is None:
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"nothing to resume: the team is {self._phase}",
                )
            at = self.clock() + lead_s
            self._paused_total += max(0.0, at - self._paused_since)
            self._phase, self._paused_since = "running", None
        return self._schedule_cmd(mpb.Schedule.RESUME, self._next_episode - 1, lead_s)

    def end_episode(self, lead_s: float = 0.0, at: float | None = None) -> float:
        """End the running (or paused) episode at ``lead_s`` from now (or at ``at``, on this
        clock: the instant its length says, exactly)."""
        with self._lock:
            if self._phase == "idle":
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION, "nothing to end: no episode is running"
                )
            self._phase = "idle"
        return self._schedule_cmd(mpb.Schedule.END, self._next_episode - 1, lead_s, at)

    def state(self, at: float = 0.0) -> mpb.MissionState:
        """The team as mission control knows it (qmix-mission status)."""
        now = self.clock()
        with self._lock:
            agents = {
                a: mpb.AgentState(
                    linked=s.linked,
                    version=s.version,
                    phase=str(s.telemetry.get("phase", "")),
                    episode_id=int(s.telemetry.get("episode_id", 0)),
                    decisions=int(s.telemetry.get("decisions", 0)),
                    overruns=int(s.telemetry.get("overruns", 0)),
                    last_heard_s=-1.0 if s.last_heard is None else now - s.last_heard,
                    rollout=s.rollout,
                )
                for a, s in self._status.items()
            }
            return mpb.MissionState(
                team_id=self.team_id,
                version=self.version,
                episode_id=self._next_episode - 1,
                phase=self._phase,
                at=at,
                agents=agents,
            )

    def offer(self, artifact_dir: str | os.PathLike[str]) -> Offer:
        """Offer a new artifact set to the team (it must be the same team: same agents)."""
        from ..artifact import Manifest

        manifest = Manifest.load(artifact_dir)
        if tuple(manifest.agent_ids) != self.agent_ids:
            raise RolloutError(
                f"the offered set is for agents {list(manifest.agent_ids)}; this team is "
                f"{list(self.agent_ids)}"
            )
        offer = offer_for(artifact_dir)
        with self._lock:
            self.rollout = Rollout(offer, Path(artifact_dir))
            for s in self._status.values():
                s.rollout = ""
            self.changed.notify_all()
        self._broadcast(mpb.MissionCommand(offer=offer_message(offer)))
        self._emit("rollout_offered", version=offer.version, bytes=offer.total_bytes)
        log.info(
            "offered artifact %s (%d bytes) to the team", offer.version[:12], offer.total_bytes
        )
        return offer

    def progress(self) -> mpb.DeployProgress:
        """The current rollout as qmix-deploy shows it."""
        with self._lock:
            r = self.rollout
            if r is None:
                return mpb.DeployProgress(done=True, cancelled="nothing offered")
            agents = {a: s.rollout for a, s in self._status.items()}
            done = bool(r.cancelled) or all(v == "active" for v in agents.values())
            return mpb.DeployProgress(
                version=r.offer.version,
                agents=agents,
                switch_at_episode=r.switch_at or 0,
                cancelled=r.cancelled,
                done=done,
            )

    def chunk(self, version: str, name: str, offset: int, max_bytes: int) -> bytes:
        """One chunk of a file of the current offer (FetchChunk)."""
        r = self.rollout
        if r is None or version != r.offer.version:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"no offer of version {version[:16]!r}")
        try:
            return read_chunk(r.folder, r.offer, name, offset, max_bytes or 1 << 30)
        except RolloutError as e:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e

    # ------------------------------------------------------------------------------ the loop side
    def _accepts(self, version: str) -> bool:
        r = self.rollout
        if version == self.version:
            return True
        # an agent that already switched (restarted after the announcement) may come back on it
        return r is not None and r.switch_at is not None and version == r.offer.version

    def _on_rollout(self, agent_id: str, st: mpb.RolloutStatus) -> None:
        r = self.rollout
        if r is None or st.version != r.offer.version:
            return
        switch: mpb.RolloutSwitch | None = None
        with self._lock:
            s = self._status[agent_id]
            if st.state == mpb.RolloutStatus.STAGED:
                s.rollout = "staged"
                r.staged.add(agent_id)
                if not r.cancelled and r.switch_at is None and r.staged >= set(self.agent_ids):
                    r.switch_at = self._next_episode
                    switch = mpb.RolloutSwitch(version=r.offer.version, at_episode=r.switch_at)
            elif st.state == mpb.RolloutStatus.FAILED:
                s.rollout = f"failed: {st.detail}"
                if r.switch_at is None and not r.cancelled:
                    r.cancelled = f"{agent_id} could not stage {r.offer.version[:12]}: {st.detail}"
                    switch = mpb.RolloutSwitch(version="", detail=r.cancelled)
            elif st.state == mpb.RolloutStatus.ACTIVE:
                s.rollout = "active"
            self.changed.notify_all()
        if switch is not None:
            self._broadcast(mpb.MissionCommand(switch=switch))
            if switch.version:
                self._emit("rollout_switch", version=switch.version, at_episode=switch.at_episode)
                log.info(
                    "every agent staged %s: switching at episode %d",
                    switch.version[:12],
                    switch.at_episode,
                )
            else:
                self._emit("rollout_cancelled", version=r.offer.version, reason=r.cancelled)
                log.warning("rollout cancelled: %s", r.cancelled)

    def attach(self, agent_id: str, version: str, loop: asyncio.AbstractEventLoop) -> _Link:
        """Admit one agent's link (the Connect stream's hello); `Refusal` says why not.
        The link's queue already holds the welcome, the schedule so far and any rollout."""
        if agent_id not in self.agent_ids:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"agent {agent_id[:80]!r} is not in this team {list(self.agent_ids)}",
            )
        if not self._accepts(version):
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"agent {agent_id} runs artifact {version[:12]}; the team runs {self.version[:12]}",
            )
        if agent_id in self._links:
            raise Refusal(
                grpc.StatusCode.ALREADY_EXISTS, f"agent {agent_id} already has a live link"
            )
        self._loop = loop
        link = _Link(agent_id, asyncio.Queue(), version)
        self._links[agent_id] = link
        with self._lock:
            s = self._status[agent_id]
            s.linked, s.version, s.last_heard = True, version, self.clock()
            self.changed.notify_all()
        self._emit("field_link", agent_id=agent_id, version=version, up=True)
        for cmd in self._welcome_commands(agent_id):
            link.queue.put_nowait(cmd)
        return link

    def detach(self, link: _Link) -> None:
        """The link's stream ended."""
        if self._links.get(link.agent_id) is link:
            del self._links[link.agent_id]
        with self._lock:
            self._status[link.agent_id].linked = False
            self.changed.notify_all()
        self._emit("field_link", agent_id=link.agent_id, up=False)

    def handle(self, link: _Link, report: mpb.FieldReport) -> None:
        """One report from the link's agent (telemetry, record lines, rollout status)."""
        reply = self._on_report(link.agent_id, report)
        if reply is not None:
            link.queue.put_nowait(reply)

    def _welcome_commands(self, agent_id: str) -> list[mpb.MissionCommand]:
        with self._lock:
            out = [
                mpb.MissionCommand(
                    welcome=mpb.Welcome(
                        team_id=self.team_id,
                        version=self.version,
                        record_next_seq=self._status[agent_id].record_next_seq,
                    )
                )
            ]
            out += [mpb.MissionCommand(schedule=s) for s in self._schedule]
            r = self.rollout
            if r is not None and not r.cancelled:
                out.append(mpb.MissionCommand(offer=offer_message(r.offer)))
                if r.switch_at is not None:
                    out.append(
                        mpb.MissionCommand(
                            switch=mpb.RolloutSwitch(
                                version=r.offer.version, at_episode=r.switch_at
                            )
                        )
                    )
        return out

    def _on_report(self, agent_id: str, report: mpb.FieldReport) -> mpb.MissionCommand | None:
        kind = report.WhichOneof("kind")
        now = self.clock()
        if kind == "telemetry":
            t = report.telemetry
            tele = {f.name: getattr(t, f.name) for f in t.DESCRIPTOR.fields}
            with self._lock:
                s = self._status[agent_id]
                s.telemetry, s.last_heard, s.version = tele, now, t.version or s.version
                r = self.rollout
                if r is not None and r.switch_at is not None and t.version == r.offer.version:
                    s.rollout = "active"  # the agent runs the new version: it has switched
                self.changed.notify_all()
            self._emit("telemetry", agent_id=agent_id, **tele)
        elif kind == "record":
            rec = report.record
            with self._lock:
                s = self._status[agent_id]
                skip = max(0, s.record_next_seq - rec.first_seq)
                if rec.first_seq > s.record_next_seq:  # a gap: ask for it again
                    return mpb.MissionCommand(record_ack=mpb.RecordAck(next_seq=s.record_next_seq))
                new = list(rec.lines)[skip:]
                first = s.record_next_seq
                s.record_next_seq += len(new)
                s.last_heard = now
                nxt = s.record_next_seq
                self.changed.notify_all()
            for i, line in enumerate(new):
                self._emit("agent_record", agent_id=agent_id, seq=first + i, line=line)
            return mpb.MissionCommand(record_ack=mpb.RecordAck(next_seq=nxt))
        elif kind == "rollout":
            self._on_rollout(agent_id, report.rollout)
        return None


def offer_message(offer: Offer) -> mpb.RolloutOffer:
    """The offer as the Connect stream carries it."""
    return mpb.RolloutOffer(
        version=offer.version,
        files=[mpb.OfferedFile(name=f.name, size=f.size, sha256=f.sha256) for f in offer.files],
    )
