"""The coordinator's run record: one JSON object per line, appended and flushed as the run goes.

Owns the record file format (what `qmix-coordinator --record` writes and `qmix-eval` reads). Every
line has a ``type``:

- ``run_start``: coordinator_instance, team_id, mode, resumed_from (episode index), time
- ``join``: agent_id, session_id, client_name, rejoin (bool: this agent joined before in this run)
- ``leave``: agent_id, reason ("left", "disconnected", "lease expired", "shutdown")
- ``episode_start``: episode_id, episode_index, seed
- ``step``: episode_id, episode_index, step, team_step, actions (every one legal under the step's
  mask), fallback (agent ids whose action the legal-action rule chose: reply missing or invalid),
  invalid (agent ids whose reply was out of range or masked), late (agent id -> replies discarded
  during this step), reward (simulation; None when not applied),
  exchange_us (requests sent -> last reply or deadline), t_ms (ms since the coordinator
  process started), decision_us (agent id -> what it reported),
  reports (field mode: agent id -> {name: value})
- ``episode_end``: episode_id, episode_index, seed, steps, return, reason
  ("terminated" | "truncated" | "limit" | "aborted: ..." | "stopped" | "env_error"), absent
  (agent ids whose seat was empty at some step of the episode), error (with env_error: what the
  environment raised)
- ``run_end``: finished (bool), team_steps, stats (per agent counters), never_joined (agent ids),
  incomplete_team_episodes, failure (why the run could not go on, or null), exit_status

Each line goes to the kernel in one ``write(2)`` when written (the file is unbuffered), so a crash
loses at most the line being written; `read_records`
skips a torn last line, and a `RecordWriter` opening a file with a torn last line (a kill -9 in the
middle of a write) cuts it off before appending, so the resumed record stays valid JSONL. No torch
here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
"""One compact encoder for every line (``json.dumps`` would rebuild its arguments per call)."""


class RecordWriter:
    """Appends records to a JSONL file, one line per unbuffered write (thread-safe for whole lines).

    The file is opened unbuffered in binary append mode: each record is encoded once and handed to
    the kernel in a single ``write(2)`` before `write` returns (what a text file's write + flush
    did, without the text layer's copies), so a crash of this process loses at most the record in
    flight.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_torn_tail(self.path)
        self._file: io.FileIO | None = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, record_type: str, **fields: Any) -> None:
        """Append one record ``{"type": record_type, **fields}``."""
        self.write_record({"type": record_type, **fields})

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Append one record given as a mapping that already holds its ``type`` (hot path)."""
        data = (_ENCODER.encode(record) + "\n").encode("utf-8")
        with self._lock:
            f = self._file
            if f is None:
                raise ValueError(f"record file {self.path} is closed")
            written = f.write(data)  # a regular file takes it all at once
            while written is not None and written < len(data):  # a partial write: the rest
                data = data[written:]
                written = f.write(data)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None


def _cut_torn_tail(path: Path) -> None:
    """Truncate a last line that has no newline (a write cut by a crash), so appends stay valid."""
    try:
        f = open(path, "r+b")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Scan back for the last complete line (records are short: read in 64 KiB blocks).
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "%s ended with a torn line (%d bytes, a crash while writing); cut off before appending",
        path,
        size - keep,
    )


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield every complete record of a record file (a torn last line is skipped with a warning)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                log.warning("%s: line %d is incomplete (a crash while writing); skipped", path, n)
                break
            try:
                rec = json.loads(line)
            except ValueError:
                log.warning("%s: line %d is not JSON; skipped", path, n)
                continue
            if isinstance(rec, Mapping):
                yield dict(rec)


def resume_point(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(next episode index, team steps so far) of a record file; (0, 0) when it does not exist.

    An episode counts as done when its ``episode_end`` reason is anything but ``stopped`` (a
    stopped episode was cut by a shutdown and is run again, with the same seed, on resume).
    """
    p = Path(path)
    if not p.exists():
        return 0, 0
    next_index, team_steps = 0, 0
    for rec in read_records(p):
        if rec["type"] == "episode_end" and rec.get("reason") != "stopped":
            next_index = max(next_index, int(rec["episode_index"]) + 1)
        elif rec["type"] == "step":
            team_steps = max(team_steps, int(rec["team_step"]) + 1)
    return next_index, team_steps
