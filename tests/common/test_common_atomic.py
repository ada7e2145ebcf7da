"""Atomic writes: the old content or the new, never a torn file or a left-over temp file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qmix_edge.common import atomic


def test_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "x.json"
    atomic.write_json(p, {"a": 1})
    atomic.write_json(p, {"a": 2})
    assert p.read_text() == '{\n "a": 2\n}\n'
    assert os.listdir(p.parent) == ["x.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask


def test_an_error_mid_write_keeps_the_old_content(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    atomic.write_text(p, "old")
    with pytest.raises(RuntimeError), atomic.atomic_open(p) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_replace_dir_swaps_a_folder_in_and_removes_the_old(tmp_path: Path) -> None:
    final = tmp_path / "art"
    for content in ("one", "two"):
        tmp = atomic.temp_dir_beside(final)
        atomic.write_text(tmp / "f", content)
        atomic.replace_dir(tmp, final)
    assert (final / "f").read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_a_crash_between_the_renames_leaves_the_old_folder_findable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "best"
    first = atomic.temp_dir_beside(final)
    atomic.write_text(first / "f", "one")
    atomic.replace_dir(first, final)
    assert atomic.aside_dirs(final) == []
    new = atomic.temp_dir_beside(final)
    atomic.write_text(new / "f", "two")
    real_replace = os.replace
    renames: list[object] = []

    def dies_after_the_first_rename(src: object, dst: object) -> None:
        renames.append(src)
        if len(renames) > 1:  # the process is gone: no swap-in, no putting back
            raise KeyboardInterrupt
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", dies_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic.replace_dir(new, final)
    monkeypatch.undo()
    assert not final.exists()
    (aside,) = atomic.aside_dirs(final)
    assert (aside / "f").read_text() == "one"


def test_replace_file_moves_a_named_temp_file_in(tmp_path: Path) -> None:
    p = tmp_path / "pic.png"
    tmp = atomic.temp_path_beside(p, ".png")
    tmp.write_bytes(b"png")
    atomic.replace_file(tmp, p)
    assert p.read_bytes() == b"png" and os.listdir(tmp_path) == ["pic.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_raises_and_keeps_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x"
    atomic.write_text(p, "old")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OSError):
            atomic.write_text(p, "new")
    finally:
        tmp_path.chmod(0o700)
    assert p.read_text() == "old"
