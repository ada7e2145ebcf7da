"""A full or read-only run directory: one clear line, the previous checkpoint intact, resumable.

The run directory lives on a small tmpfs mounted for the test (root only; skipped with the reason
where mounting is not permitted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmix_edge.train.checkpoint import latest_checkpoint, list_checkpoints, load_run, read_state
from qmix_edge.train.cli import main

pytestmark = pytest.mark.usefixtures("plain_logging")

TINY = ["--env", "two_step", "--hidden-dim", "8", "--n-envs", "2", "--batch-size", "4"]
TINY += ["--eval-episodes", "2", "--eval-interval", "100000", "--checkpoint-interval", "100", "-q"]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted at teardown."""
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here, so no small filesystem to fill")
    done = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` until about ``leave`` bytes are free; returns the filler file."""
    filler = fs / "filler"
    free = shutil.disk_usage(fs).free
    with filler.open("wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def _first_session(fs: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A run of 200 env steps on ``fs`` with checkpoints at 100 and 200: (run dir, latest)."""
    run_dir = fs / "run"
    assert main([*TINY, "--run-dir", str(run_dir), "--total-timesteps", "200"]) == 0
    good = latest_checkpoint(run_dir)
    assert good is not None and good.name == "step_000000200"
    capsys.readouterr()
    return run_dir, good


def _check_left_clean(run_dir: Path, good: Path) -> None:
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    # No new or temp folder (best/ holds the best greedy evaluation's networks, written at step 0)
    assert names == ["best", "latest.json", "step_000000100", good.name], names
    assert latest_checkpoint(run_dir) == good
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_000000100", good.name]
    assert read_state(good)["env_steps"] == 200


def test_full_disk_stops_with_one_line_and_resumes(
    small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, good = _first_session(small_fs, capsys)

    filler = _fill(small_fs, leave=8 * 1024)  # room for metric lines, not for a checkpoint
    assert main(["--resume", str(run_dir), "--total-timesteps", "400"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("qmix-train: resuming"), err  # no traceback
    line = err[1]
    assert line.startswith("qmix-train: error: cannot write checkpoint step_000000300 (")
    assert "No space left on device" in line and "bytes free there" in line
    assert f"to {run_dir / 'checkpoints' / 'step_000000300'}" in line
    needed = int(line.split("step_000000300 (")[1].split(" bytes")[0].replace(",", ""))
    assert needed > 8 * 1024
    assert f"The last good checkpoint is {good}" in line
    _check_left_clean(run_dir, good)

    filler.unlink()
    assert main(["--resume", str(run_dir), "--total-timesteps", "400"]) == 0
    assert "from the last good checkpoint step_000000200" in capsys.readouterr().err
    assert load_run(run_dir, "last").step == 400


def test_read_only_run_dir_stops_with_one_line_and_resumes(
    small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, good = _first_session(small_fs, capsys)

    assert _mount("-o", "remount,ro", str(small_fs)).returncode == 0
    try:
        assert main(["--resume", str(run_dir), "--total-timesteps", "400"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2, err
        assert err[1].startswith("qmix-train: error: cannot write ") and str(run_dir) in err[1]
        assert "Read-only file system" in err[1]
        _check_left_clean(run_dir, good)
    finally:
        assert _mount("-o", "remount,rw", str(small_fs)).returncode == 0
    assert main(["--resume", str(run_dir), "--total-timesteps", "400"]) == 0
    assert load_run(run_dir, "last").step == 400
    assert os.access(run_dir, os.W_OK)
