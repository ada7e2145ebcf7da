"""The coordinator's end of the run record (`qmix_edge.runtime.records` owns the format): one
`Recorder` the sessions and the step clock write through, a no-op until a record file is opened.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..records import RecordWriter


class Recorder:
    """Writes the run record to ``path`` once `open`ed; without a path (or before `open`, or
    after `close`) every write is dropped."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        """The record file, or None when this run keeps no record."""
        self._writer: RecordWriter | None = None

    def open(self) -> None:
        """Start appending to the record file (if any)."""
        if self.path is not None and self._writer is None:
            self._writer = RecordWriter(self.path)

    def write(self, record_type: str, **fields: Any) -> None:
        """Append one record ``{"type": record_type, **fields}``."""
        if self._writer is not None:
            self._writer.write(record_type, **fields)

    def write_record(self, record: Mapping[str, Any]) -> None:
        """The hot path's `write`: ``record`` already holds its ``type``."""
        if self._writer is not None:
            self._writer.write_record(record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
