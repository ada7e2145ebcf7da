"""The field agent's link to mission control (``qmix_edge.v1.Mission``), off the decision path.

A background thread keeps the link: it estimates the clock offset (`qmix_edge.runtime.timesync`),
opens the Connect stream with this agent's id and artifact version, turns mission control's
schedule into this device's clock for the control loop's `Mission`, sends telemetry about once a
second and the lines of the agent's local record mission control has not stored yet, and carries
a rollout: download the offered set in bounded chunks into the `ArtifactStore` (resuming where a
file ends), verify and stage it, report STAGED or FAILED, and on the team's switch have the loop
change its policy at the named episode. When the link drops the loop is told (`Mission.link`) and
the thread reconnects with backoff; the loop never waits for it. Loads grpc (field agents with
mission control); no torch.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from ..proto.v1 import mission_pb2 as mpb
from ..proto.v1 import mission_pb2_grpc as mpb_grpc
from ..rollout import CHUNK_BYTES, Offer, OfferFile, RolloutError
from ..security import ClientTls, token_metadata
from ..timesync import OffsetEstimator, Probe
from .autonomous import Mission
from .store import ArtifactStore

log = logging.getLogger(__name__)

_LINK_DROPPED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
"""A chunk fetch that failed with these lost the link (resume later); any other code is
mission control's refusal, reported as a failed stage."""
_KINDS = {
    mpb.Schedule.START: "start",
    mpb.Schedule.PAUSE: "pause",
    mpb.Schedule.RESUME: "resume",
    mpb.Schedule.END: "end",
}


_TELEMETRY_FIELDS = frozenset(f.name for f in mpb.Telemetry.DESCRIPTOR.fields)
"""What a Telemetry report carries (other counters of the loop stay local)."""


class LocalRecord:
    """The agent's own JSONL record: one line per event, numbered by position (0, 1, ...), so
    mission control stores each line once whatever the reconnections. Lines mission control has
    acknowledged are dropped from memory (`forget_before`); the file keeps every one, and a
    request for a forgotten line reads it back from there."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._base = 0  # the number of the first line still in memory
        self._lines: list[str] = []
        if self.path.exists():
            text = self.path.read_text()
            complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
            self._lines = complete.splitlines()
            if complete != text:  # a torn last line from a crash
                self.path.write_text(complete)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for appends

    def append(self, record: dict[str, Any]) -> int:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            self._lines.append(line)
            return self._base + len(self._lines) - 1

    def lines_from(self, seq: int, limit: int = 200) -> list[str]:
        with self._lock:
            if seq >= self._base:
                return self._lines[seq - self._base : seq - self._base + limit]
            self._file.flush()
        with open(self.path, encoding="utf-8") as f:  # forgotten lines: from the file
            return [x.rstrip("\n") for x in itertools.islice(f, seq, seq + limit)]

    def forget_before(self, seq: int) -> None:
        """Mission control has stored every line before ``seq``: drop them from memory."""
        with self._lock:
            drop = max(0, min(seq - self._base, len(self._lines)))
            del self._lines[:drop]
            self._base += drop

    def __len__(self) -> int:
        with self._lock:
            return self._base + len(self._lines)

    def close(self) -> None:
        self._file.close()


class MissionLink:
    """One agent's link to mission control (see the module docstring)."""

    def __init__(
        self,
        target: str,
        agent_id: str,
        mission: Mission,
        *,
        version: Callable[[], str],
        telemetry: Callable[[], dict[str, Any]],
        on_switch: Callable[[str, int], None],
        store: ArtifactStore | None = None,
        stage_check: Callable[[Path], None] | None = None,
        record: LocalRecord | None = None,
        tls: ClientTls | None = None,
        token: str | None = None,
        telemetry_period_s: float = 1.0,
        backoff_max_s: float = 2.0,
    ) -> None:
        self.target, self.agent_id, self.mission = target, agent_id, mission
        self.version, self.telemetry, self.on_switch = version, telemetry, on_switch
        self.store, self.stage_check, self.record = store, stage_check, record
        self.tls, self.token = tls, token
        self.telemetry_period_s, self.backoff_max_s = telemetry_period_s, backoff_max_s
        self.clock = OffsetEstimator()
        self.team_version = ""
        """The version mission control says the team runs."""
        self.last_refusal = ""
        """Why mission control last refused this link (empty if it never did)."""
        self.refused = threading.Event()
        """Set when mission control refuses this link (`last_refusal` says why)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mission-{agent_id}", daemon=True)
        self._outbox: queue.Queue[mpb.FieldReport | None] = queue.Queue()
        self._record_next = 0
        self._rollout_thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread.start()

    def switched(self, version: str) -> None:
        """This agent now runs ``version`` (a rollout's switch took effect): tell mission control
        at once rather than with the next telemetry."""
        self._outbox.put(
            mpb.FieldReport(
                rollout=mpb.RolloutStatus(version=version, state=mpb.RolloutStatus.ACTIVE)
            )  # type: ignore[arg-type]
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._outbox.put(None)
        self._thread.join(timeout)

    # --------------------------------------------------------------------------- connection
    def _channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, self.tls.credentials(), self.tls.channel_options())

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return token_metadata(self.agent_id, self.token) if self.token else None

    def _run(self) -> None:
        attempt = 0
        rng = random.Random()
        while not self._stop.is_set():
            try:
                with self._channel() as channel:
                    stub = mpb_grpc.MissionStub(channel)
                    self._probe(stub, n=8)
                    attempt = 0
                    self._session(stub)
            except grpc.RpcError as e:
                code = e.code()  # type: ignore[attr-defined]
                if code in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.ALREADY_EXISTS,
                ):
                    self.last_refusal = f"{code.name}: {e.details()}"  # type: ignore[attr-defined]
                    self.refused.set()
                    log.warning("mission control refused this agent: %s", self.last_refusal)
                else:
                    log.info("mission control unreachable: %s", code.name)
            except Exception:
                log.exception("the mission link failed; reconnecting")
            self.mission.link(False, at=time.monotonic())
            attempt += 1
            delay = min(self.backoff_max_s, 0.05 * 2**attempt)
            self._stop.wait(rng.uniform(delay / 2, delay))

    def _probe(self, stub: mpb_grpc.MissionStub, n: int) -> None:
        for _ in range(n):
            t0 = time.monotonic()
            r = stub.Clock(mpb.ClockProbe(t0=t0), timeout=2.0, metadata=self._metadata())
            self.clock.add(Probe(t0, r.t1, r.t2, time.monotonic()))

    def _reports(self, hello: mpb.FieldReport) -> Iterator[mpb.FieldReport]:
        yield hello
        while True:
            item = self._outbox.get()
            if item is None or self._stop.is_set():
                return
            yield item

    def _session(self, stub: mpb_grpc.MissionStub) -> None:
        while not self._outbox.empty():  # reports of a dead link: telemetry is resent anyway
            self._outbox.get_nowait()
        hello = mpb.FieldReport(
            hello=mpb.FieldHello(agent_id=self.agent_id, version=self.version(), protocol_version=1)
        )
        stream = stub.Connect(self._reports(hello), metadata=self._metadata())
        ticker = threading.Thread(target=self._tick, args=(stream,), daemon=True)
        started = False
        try:
            for cmd in stream:
                if not started:
                    self.mission.link(True, at=time.monotonic())
                    ticker.start()
                    started = True
                self._command(stub, cmd)
        finally:
            self._outbox.put(None)
            if started:
                ticker.join(2.0)

    def _tick(self, stream: Any) -> None:
        """Telemetry and record lines, about every ``telemetry_period_s``, while the stream lives."""
        while not self._stop.is_set() and stream.is_active():
            t = {k: v for k, v in self.telemetry().items() if k in _TELEMETRY_FIELDS}
            t["link_lost_s"] = 0.0
            self._outbox.put(mpb.FieldReport(telemetry=mpb.Telemetry(**t)))
            self._send_record()
            self._stop.wait(self.telemetry_period_s)

    def _send_record(self) -> None:
        if self.record is None:
            return
        lines = self.record.lines_from(self._record_next)
        if lines:
            self._outbox.put(
                mpb.FieldReport(record=mpb.RecordLines(first_seq=self._record_next, lines=lines))
            )
            self._record_next += len(lines)

    # ----------------------------------------------------------------------------- commands
    def _command(self, stub: mpb_grpc.MissionStub, cmd: mpb.MissionCommand) -> None:
        kind = cmd.WhichOneof("kind")
        if kind == "welcome":
            self.team_version = cmd.welcome.version
            self._record_next = int(cmd.welcome.record_next_seq)
            self._send_record()
        elif kind == "schedule":
            s = cmd.schedule
            at = self.clock.to_local(s.at)
            name = _KINDS.get(s.kind)
            if name == "start":
                self.mission.start(int(s.episode_id), at)
            elif name == "pause":
                self.mission.pause(at)
            elif name == "resume":
                self.mission.resume(at)
            elif name == "end":
                self.mission.end(at)
        elif kind == "record_ack":
            self._record_next = int(cmd.record_ack.next_seq)
            if self.record is not None:
                self.record.forget_before(self._record_next)
        elif kind == "offer":
            offer = Offer(
                cmd.offer.version,
                tuple(OfferFile(f.name, int(f.size), f.sha256) for f in cmd.offer.files),
            )
            if self._rollout_thread is None or not self._rollout_thread.is_alive():
                self._rollout_thread = threading.Thread(
                    target=self._download, args=(stub, offer), daemon=True
                )
                self._rollout_thread.start()
        elif kind == "switch":
            sw = cmd.switch
            if sw.version:
                self.on_switch(sw.version, int(sw.at_episode))
            else:
                log.warning("rollout cancelled: %s", sw.detail)

    def _download(self, stub: mpb_grpc.MissionStub, offer: Offer) -> None:
        state, detail = mpb.RolloutStatus.FAILED, ""
        try:
            if self.store is None:
                raise RolloutError(
                    "this agent has no artifact store (--store) to stage a rollout in"
                )
            if not self.store.has(offer.version):
                d = self.store.begin(offer)
                while (need := d.next_needed()) is not None and not self._stop.is_set():
                    name, offset = need
                    chunk = stub.FetchChunk(
                        mpb.ChunkRequest(
                            version=offer.version, name=name, offset=offset, max_bytes=CHUNK_BYTES
                        ),
                        timeout=10.0,
                        metadata=self._metadata(),
                    )
                    d.write(name, offset, chunk.data)
                if self._stop.is_set():
                    return
                d.stage(self.stage_check)
            state = mpb.RolloutStatus.STAGED
            log.info("staged artifact %s", offer.version[:12])
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            if code in _LINK_DROPPED:  # the offer comes again on reconnection: resume then
                log.info(
                    "download of %s interrupted (%s); it resumes on reconnection",
                    offer.version[:12],
                    code,
                )
                return
            detail = f"mission control refused a chunk: {code.name}: {e.details()}"[:500]  # type: ignore[attr-defined]
            log.warning("could not stage artifact %s: %s", offer.version[:12], detail)
        except (RolloutError, OSError) as e:
            detail = str(e)[:500]
            log.warning("could not stage artifact %s: %s", offer.version[:12], detail)
        self._outbox.put(
            mpb.FieldReport(
                rollout=mpb.RolloutStatus(version=offer.version, state=state, detail=detail)
            )  # type: ignore[arg-type]
        )
