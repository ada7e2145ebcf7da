"""Atomic file and folder writes: a reader (or a restart after a crash, a full disk or a power cut)
sees the old content or the new, never a torn file.

Files: a temp file in the same folder, written, flushed and fsynced, renamed over the target
(``os.replace``), then the folder fsynced so the rename itself is durable. Folders: built complete
under a temp name, then swapped in by rename with the previous one kept aside until the swap is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""The mode an ordinary ``open()`` would give a new file (``mkstemp`` makes 0600)."""


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder so a rename inside it survives a power cut (a no-op where the filesystem
    does not let a folder be opened or synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` when the block ends without error.

    The parent folder is created if needed. ``mode`` defaults to what ``open()`` would give. On an
    error nothing is left behind and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_open(path, mode) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode(), mode)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> None:
    """Replace ``path`` with ``obj`` as JSON (and a final newline) atomically."""
    write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def temp_path_beside(path: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh, unused temp name in ``path``'s folder, for writers that need a file name rather
    than a file object (e.g. a plotting library); move it in with `replace_file`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def replace_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """fsync the finished file ``tmp`` and rename it over ``path`` (then fsync the folder); ``tmp``
    is removed if that fails."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(Path(path).parent)


def temp_dir_beside(path: str | os.PathLike[str]) -> Path:
    """A fresh temp folder in ``path``'s parent, to build a folder complete before `replace_dir`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _aside_prefix(path: Path) -> str:
    return f".{path.name}.old."


def aside_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """The previous versions of folder ``path`` that `replace_dir` had renamed aside and not yet
    removed: after a crash between its two renames, the newest one is the folder's last complete
    content (newest first)."""
    path = Path(path)
    found = [p for p in path.parent.glob(_aside_prefix(path) + "*.tmp") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def replace_dir(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Swap the finished folder ``tmp`` in as ``path``.

    Every file in ``tmp`` should already be fsynced (write them with `atomic_open` or fsync them);
    ``tmp`` itself is fsynced here. An existing ``path`` is renamed aside first and removed only
    after the new one is in place; if the swap fails it is put back and ``tmp`` is left for the
    caller to remove.
    """
    tmp, path = Path(tmp), Path(path)
    fsync_dir(tmp)
    old: Path | None = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=_aside_prefix(path), suffix=".tmp", dir=path.parent))
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            with contextlib.suppress(OSError):
                os.replace(old, path)
        raise
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
