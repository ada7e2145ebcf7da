"""A run directory's default name, reading its saved config, and writing its files: atomically,
and a failed write said in one line.

Every file is written with `qmix_edge.common.atomic` (temp file, fsync, rename, folder fsync), so a
crash, a full disk or a read-only folder leaves the previous content. A write that fails becomes a
`RunDirWriteError` naming the path, the bytes it needed and the space free there: what the
``qmix-train`` user reads as the one line of a stopped run.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmix_edge.common import atomic

from .errors import CheckpointError, RunDirWriteError

if TYPE_CHECKING:
    from .config import TrainConfig

DEFAULT_RUNS_DIR = Path("runs")


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def write_error(path: Path, nbytes: int | None, error: OSError, what: str = "") -> RunDirWriteError:
    """A one-line `RunDirWriteError` for a failed write of ``nbytes`` bytes to ``path``."""
    reason = error.strerror or str(error)
    free = _free_bytes(Path(path))
    size = f"{nbytes:,} bytes" if nbytes is not None else "data"
    room = f"; {free:,} bytes free there" if free is not None else ""
    return RunDirWriteError(
        f"cannot write {what or size} to {path}: {reason} (errno {error.errno}{room}). Free "
        "some space or make the folder writable",
        path=Path(path),
        nbytes=nbytes,
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a failure raises `RunDirWriteError`."""
    try:
        atomic.write_bytes(path, data)
    except OSError as e:
        raise write_error(path, len(data), e) from e


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically; a failure raises `RunDirWriteError`."""
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def _short_env_name(env: str) -> str:
    name = env.split(":")[-1].replace("/", "_").replace(".", "_")
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "env"


def default_run_dir(config: TrainConfig, runs_dir: Path = DEFAULT_RUNS_DIR) -> Path:
    """``runs/<algo>-<env>-s<seed>-<UTC time>`` (a suffix is added if it exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = runs_dir / f"{config.algo}-{_short_env_name(config.env)}-s{config.seed}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run saved (``config.json``), as a dict."""
    path = run_dir / "config.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{run_dir} is not a run directory ({path.name} missing); pass the folder of the run to resume"
        ) from e
