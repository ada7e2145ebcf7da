"""Checkpoints and run directories: atomic writes, no pickled objects, exact resume, `load_run`.

A run directory (``runs/<name>/``)::

    config.yaml, config.json   the resolved TrainConfig
    spec.json                  the EnvSpec the networks were built for
    run.json                   run id, package version, creation time
    metrics.jsonl, tb/         metrics (JSON lines, TensorBoard)
    learning_curve.png         greedy return vs env steps and vs wall seconds
    checkpoints/
        latest.json            {"checkpoint": "step_000050000"}: the commit point, written last
        best/                  the networks at the best greedy evaluation so far (model.pt and
                               state.json only); `qmix-export` takes it by default
        step_000050000/
            model.pt           torch state_dicts (+ torch RNG state as a uint8 tensor)
            state.json         counters, config, spec, numpy RNG states, collector bookkeeping
            replay.npz         replay episodes (kept in the latest checkpoint only)
            collector.npz      in-progress episodes of the training envs

Nothing is pickled: ``model.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``; numpy arrays are read with ``allow_pickle=False``; everything else
is JSON (numpy ``Generator.bit_generator.state`` is a dict of ints). Every file is written to a temp
file in the same folder, fsynced, and moved into place with ``os.replace``; ``latest.json`` is
replaced last, so a crash at any moment leaves the previous checkpoint intact.

`load_run` is the exporter's entry point: networks rebuilt from the saved config and spec, weights
loaded, in eval mode.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qmix_edge.envs import EnvSpec

from .errors import CheckpointError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
MODEL_FILE = "model.pt"
STATE_FILE = "state.json"
REPLAY_FILE = "replay.npz"
COLLECTOR_FILE = "collector.npz"
BEST_DIR = "best"
"""``checkpoints/best/``: the networks of the best greedy evaluation so far (what export takes)."""


# --- atomic writes ----------------------------------------------------------------------------------


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path):  # type: ignore[no-untyped-def]
    """Yield a binary file that replaces ``path`` atomically when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, os.replace)."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# --- locating checkpoints ---------------------------------------------------------------------------


def checkpoint_name(env_steps: int) -> str:
    return f"step_{env_steps:09d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The committed latest checkpoint folder of ``run_dir``, or None if it has none."""
    latest = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not latest.exists():
        return None
    try:
        name = json.loads(latest.read_text())["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{latest} is corrupt ({e}); pass an explicit checkpoint") from e
    return latest.parent / name


def best_checkpoint(run_dir: Path) -> Path | None:
    """The folder of the run's best greedy evaluation, or None (older runs, or no evaluation yet)."""
    base = Path(run_dir) / CHECKPOINTS_DIR
    for name in (BEST_DIR, _BEST_OLD):  # _BEST_OLD: a crash between write_best's two renames
        if (base / name / STATE_FILE).is_file():
            return base / name
    return None


def resolve_checkpoint(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """A checkpoint folder from None (the best evaluation's, else the latest), ``"best"``,
    ``"last"`` (the latest), a folder name, a folder path or a model.pt path."""
    run_dir = Path(run_dir)
    if checkpoint is None or str(checkpoint) == BEST_DIR:
        best = best_checkpoint(run_dir)
        if best is not None:
            return best
        if checkpoint is not None:
            raise CheckpointError(
                f"{run_dir} has no best checkpoint (runs record one at every greedy evaluation "
                "that beats the previous best); pass --checkpoint last for the latest"
            )
    if checkpoint is None or str(checkpoint) in ("last", "latest"):
        found = latest_checkpoint(run_dir)
        if found is None:
            raise CheckpointError(
                f"no checkpoint in {run_dir} (expected {CHECKPOINTS_DIR}/{LATEST_FILE}); "
                "train first, or pass a run directory that has finished at least one checkpoint"
            )
        return found
    p = Path(checkpoint)
    candidates = [p, run_dir / CHECKPOINTS_DIR / p] if not p.is_absolute() else [p]
    for c in candidates:
        if c.is_file() and c.name == MODEL_FILE:
            return c.parent
        if (c / MODEL_FILE).is_file():
            return c
    raise CheckpointError(
        f"checkpoint {str(checkpoint)!r} not found under {run_dir}; expected a folder holding "
        f"{MODEL_FILE} (e.g. {CHECKPOINTS_DIR}/step_000050000) or a path to {MODEL_FILE}"
    )


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints (``step_*`` folders), oldest first."""
    base = Path(run_dir) / CHECKPOINTS_DIR
    if not base.is_dir():
        return []
    return sorted(
        p
        for p in base.iterdir()
        if p.is_dir() and p.name.startswith("step_") and (p / MODEL_FILE).is_file()
    )


# --- writing and reading ----------------------------------------------------------------------------


def write_checkpoint(
    run_dir: Path,
    env_steps: int,
    model: dict[str, Any],
    state: dict[str, Any],
    write_replay: Any = None,
    write_collector: Any = None,
    keep_replay_only_latest: bool = True,
) -> Path:
    """Write one checkpoint folder and commit it as latest. Returns the folder.

    ``model``: tensors/plain values for model.pt. ``state``: JSON-able dict for state.json.
    ``write_replay`` / ``write_collector``: callables taking a binary file object (npz writers).
    """
    base = Path(run_dir) / CHECKPOINTS_DIR
    folder = base / checkpoint_name(env_steps)
    folder.mkdir(parents=True, exist_ok=True)
    if write_replay is not None:
        with atomic_open(folder / REPLAY_FILE) as f:
            write_replay(f)
    if write_collector is not None:
        with atomic_open(folder / COLLECTOR_FILE) as f:
            write_collector(f)
    atomic_torch_save(model, folder / MODEL_FILE)
    atomic_write_json(folder / STATE_FILE, {"format": CHECKPOINT_FORMAT, **state})
    atomic_write_json(base / LATEST_FILE, {"checkpoint": folder.name, "env_steps": env_steps})
    if keep_replay_only_latest:
        for old in list_checkpoints(run_dir):
            if old != folder:
                for name in (REPLAY_FILE, COLLECTOR_FILE):
                    with contextlib.suppress(FileNotFoundError):
                        (old / name).unlink()
    return folder


_BEST_OLD = ".best-old"


def write_best(run_dir: Path, model: dict[str, Any], state: dict[str, Any]) -> Path:
    """Replace ``checkpoints/best/`` with these networks and their evaluation (crash-safe).

    Written complete into a temp folder, then swapped in by two renames; a crash between them
    leaves the previous best under ``.best-old``, which `best_checkpoint` still finds.
    """
    base = Path(run_dir) / CHECKPOINTS_DIR
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".best-new-", dir=base))
    try:
        atomic_torch_save(model, tmp / MODEL_FILE)
        atomic_write_json(tmp / STATE_FILE, {"format": CHECKPOINT_FORMAT, **state})
        final, old = base / BEST_DIR, base / _BEST_OLD
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(base)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_model(folder: Path) -> dict[str, Any]:
    try:
        return torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{folder / MODEL_FILE} is missing") from e
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for corrupt files
        raise CheckpointError(f"cannot read {folder / MODEL_FILE}: {e}") from e


def read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from e
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state.get('format')!r}; this qmix-edge reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    return state


def remove_run_checkpoints_after(run_dir: Path, env_steps: int) -> None:
    """Delete checkpoint folders newer than ``env_steps`` (stale after a resume from an older one)."""
    for p in list_checkpoints(run_dir):
        try:
            step = int(p.name.split("_")[1])
        except (IndexError, ValueError):
            continue
        if step > env_steps:
            shutil.rmtree(p, ignore_errors=True)


# --- load_run: the exporter's entry point -----------------------------------------------------------


@dataclass(frozen=True)
class LoadedRun:
    """A trained run ready for export or evaluation."""

    config: dict[str, Any]
    """The resolved training config (TrainConfig.to_dict())."""
    spec: EnvSpec
    """The environment spec the networks were built for."""
    agent_net: Any
    """The `AgentNetwork` with the checkpoint's weights, in eval mode."""
    mixer: nn.Module | None
    """The mixer with its weights (None for IQL); never exported."""
    step: int
    """Env steps of training at this checkpoint."""
    run_id: str
    """The run's unique id (stable across resumes)."""
    checkpoint_path: Path
    """The checkpoint folder that was loaded."""


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise CheckpointError(
            f"{run_dir} is not a qmix-edge run directory ({path.name} is missing); "
            "pass the folder qmix-train wrote (runs/<name>)"
        ) from e


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> LoadedRun:
    """Load a run's networks from its latest (or the named) checkpoint, in eval mode."""
    from .config import TrainConfig
    from .learner import build_models

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    info = read_run_info(run_dir)
    folder = resolve_checkpoint(run_dir, checkpoint)
    state = read_state(folder)
    config = TrainConfig.from_dict(state["config"], source=f"{folder / STATE_FILE} config")
    spec = EnvSpec.from_dict(state["spec"])
    agent_net, mixer = build_models(config, spec)
    model = read_model(folder)
    try:
        agent_net.load_state_dict(model["learner"]["agent_net"])
        if mixer is not None:
            mixer.load_state_dict(model["learner"]["mixer"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{folder / MODEL_FILE} does not match the saved config: {e}") from e
    agent_net.eval()
    if mixer is not None:
        mixer.eval()
    return LoadedRun(
        config=config.to_dict(),
        spec=spec,
        agent_net=agent_net,
        mixer=mixer,
        step=int(state["env_steps"]),
        run_id=str(info["run_id"]),
        checkpoint_path=folder,
    )
