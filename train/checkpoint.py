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
is JSON (numpy ``Generator.bit_generator.state`` is a dict of ints).

A checkpoint is written whole or not at all: its files go into a hidden temp folder
(``checkpoints/.step_000050000.<random>.tmp``), each fsynced, the folder is fsynced and renamed into
place, the parent is fsynced, and only then is ``latest.json`` replaced (temp file, fsync,
``os.replace``). So a crash, a full disk or a read-only folder at any moment leaves the previous
checkpoint intact and no half-written ``step_*`` folder; a failed write raises `RunDirWriteError`
naming the path and the bytes the checkpoint needed. A checkpoint holding any NaN or infinite
tensor is refused before anything is written (`NonFiniteCheckpointError`), so the last good one is
never replaced by a poisoned one.

``stopped.json`` in the run directory records why a run stopped part way (a non-finite value, a
failed write); ``--resume`` reports it and continues from the last good checkpoint.

`load_run` is the exporter's entry point: networks rebuilt from the saved config and spec, weights
loaded, in eval mode.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qmix_edge.common import atomic
from qmix_edge.envs import EnvSpec

from .config import TrainConfig
from .errors import CheckpointError, NonFiniteCheckpointError, RunDirWriteError
from .finite import non_finite_tensors
from .registry import build_models
from .run_files import atomic_write_json, write_error

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
MODEL_FILE = "model.pt"
STATE_FILE = "state.json"
REPLAY_FILE = "replay.npz"
COLLECTOR_FILE = "collector.npz"
STOP_FILE = "stopped.json"
CHECKPOINT_PREFIX = "step_"
BEST_DIR = "best"
"""``checkpoints/best/``: the networks of the best greedy evaluation so far (what export takes)."""


# --- locating checkpoints ---------------------------------------------------------------------------


def checkpoint_name(env_steps: int) -> str:
    return f"step_{env_steps:09d}"


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds the files every checkpoint has (model and state)."""
    return (folder / MODEL_FILE).is_file() and (folder / STATE_FILE).is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The committed latest checkpoint folder of ``run_dir``, or None if it has none.

    ``latest.json`` is the commit point. When it names a folder that is not complete (a run
    written by an older qmix-edge that was stopped mid-write), the newest complete checkpoint is
    used instead, with a warning.
    """
    latest = Path(run_dir) / CHECKPOINTS_DIR / LATEST_FILE
    if not latest.exists():
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    try:
        name = json.loads(latest.read_text())["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{latest} is corrupt ({e}); pass an explicit checkpoint") from e
    folder = latest.parent / name
    if is_complete(folder):
        return folder
    found = [p for p in list_checkpoints(run_dir) if p.name < folder.name]
    if not found:
        return None
    logger.warning(
        "%s names %s, which is incomplete; using the newest complete checkpoint %s",
        latest,
        folder.name,
        found[-1].name,
    )
    return found[-1]


def resume_point(run_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues from: the newest complete one (`latest_checkpoint`)."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(
            f"{run_dir} has no complete checkpoint to resume from; start a new run instead"
        )
    return folder


def best_checkpoint(run_dir: Path) -> Path | None:
    """The folder of the run's best greedy evaluation, or None (older runs, or no evaluation yet)."""
    base = Path(run_dir) / CHECKPOINTS_DIR
    # After a crash between write_best's two renames, the previous best is the one set aside.
    for folder in (base / BEST_DIR, *atomic.aside_dirs(base / BEST_DIR)):
        if (folder / STATE_FILE).is_file():
            return folder
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
    """The complete ``step_*`` checkpoint folders of ``run_dir``, oldest first."""
    base = Path(run_dir) / CHECKPOINTS_DIR
    if not base.is_dir():
        return []
    return sorted(
        p
        for p in base.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX) and p.is_dir() and is_complete(p)
    )


# --- writing and reading ----------------------------------------------------------------------------


class _NullWriter:
    """A write-only sink that counts bytes (to size a checkpoint after a failed write)."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self.count += n
        return n

    def flush(self) -> None:
        pass


FileWriter = Any
"""A callable taking a writable binary file object (e.g. an npz writer)."""


def _write_synced(path: Path, write: FileWriter) -> None:
    with atomic.atomic_open(path) as f:
        write(f)


def _clean_stale_temp_folders(base: Path) -> None:
    """Remove temp folders a killed writer left behind (they are never read)."""
    for p in base.glob(f".{CHECKPOINT_PREFIX}*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def write_checkpoint(
    run_dir: Path,
    env_steps: int,
    model: dict[str, Any],
    state: dict[str, Any],
    write_replay: FileWriter | None = None,
    write_collector: FileWriter | None = None,
    keep_replay_only_latest: bool = True,
) -> Path:
    """Write one checkpoint folder atomically and commit it as latest. Returns the folder.

    ``model``: tensors/plain values for model.pt. ``state``: JSON-able dict for state.json.
    ``write_replay`` / ``write_collector``: callables taking a binary file object (npz writers).
    Raises `NonFiniteCheckpointError` (nothing written) when a tensor of ``model`` holds a NaN or
    inf, and `RunDirWriteError` when the folder cannot be written (the previous checkpoint and
    ``latest.json`` are left as they were, and no new folder remains).
    """
    bad = non_finite_tensors(model)
    if bad:
        listed = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise NonFiniteCheckpointError(
            f"refusing to write checkpoint {checkpoint_name(env_steps)}: {len(bad)} tensors hold "
            f"NaN or inf ({listed}); the last good checkpoint is kept",
            tensors=bad,
        )
    base = Path(run_dir) / CHECKPOINTS_DIR
    folder = base / checkpoint_name(env_steps)
    buf = io.BytesIO()
    torch.save(model, buf)
    files: list[tuple[str, FileWriter]] = []
    if write_replay is not None:
        files.append((REPLAY_FILE, write_replay))
    if write_collector is not None:
        files.append((COLLECTOR_FILE, write_collector))
    model_bytes = buf.getvalue()
    state_bytes = json.dumps({"format": CHECKPOINT_FORMAT, **state}, indent=1).encode()
    files.append((MODEL_FILE, lambda f: f.write(model_bytes)))
    files.append((STATE_FILE, lambda f: f.write(state_bytes)))

    tmp: Path | None = None
    renamed_in = committed = False
    rewrite = False  # the same step again (Ctrl-C right after a checkpoint)
    current = base
    try:
        base.mkdir(parents=True, exist_ok=True)
        _clean_stale_temp_folders(base)
        tmp = atomic.temp_dir_beside(folder)
        for name, write in files:
            current = folder / name  # what the user will look for (the temp folder is removed)
            _write_synced(tmp / name, write)
        current = folder
        rewrite = folder.exists()
        atomic.replace_dir(tmp, folder)
        tmp, renamed_in = None, True
        current = base / LATEST_FILE
        atomic.write_json(current, {"checkpoint": folder.name, "env_steps": env_steps}, indent=None)
        committed = True
    except OSError as e:
        needed = len(model_bytes) + len(state_bytes)
        for _, write in files[:-2]:
            sink = _NullWriter()
            with contextlib.suppress(Exception):
                write(sink)
            needed += sink.count
        raise write_error(
            current, needed, e, what=f"checkpoint {folder.name} ({needed:,} bytes)"
        ) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if renamed_in and not committed and not rewrite:
            # In place, but latest.json still names the previous checkpoint. (A rewrite of the
            # step latest.json already names is complete once it is in place: it stays.)
            shutil.rmtree(folder, ignore_errors=True)
    if keep_replay_only_latest:
        for old in list_checkpoints(run_dir):
            if old != folder:
                for name in (REPLAY_FILE, COLLECTOR_FILE):
                    with contextlib.suppress(FileNotFoundError):
                        (old / name).unlink()
    return folder


def write_best(run_dir: Path, model: dict[str, Any], state: dict[str, Any]) -> Path:
    """Replace ``checkpoints/best/`` with these networks and their evaluation (crash-safe).

    Written complete into a temp folder, then swapped in by `atomic.replace_dir`'s two renames; a
    crash between them leaves the previous best set aside, where `best_checkpoint` still finds it.
    """
    bad = non_finite_tensors(model)
    if bad:
        raise NonFiniteCheckpointError(
            f"refusing to write the best checkpoint: {len(bad)} tensors hold NaN or inf "
            f"({', '.join(bad[:6])}); the previous best is kept",
            tensors=bad,
        )
    base = Path(run_dir) / CHECKPOINTS_DIR
    final = base / BEST_DIR
    buf = io.BytesIO()
    torch.save(model, buf)
    model_bytes = buf.getvalue()
    state_bytes = json.dumps({"format": CHECKPOINT_FORMAT, **state}, indent=1).encode()
    tmp: Path | None = None
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_dir_beside(final)
        _write_synced(tmp / MODEL_FILE, lambda f: f.write(model_bytes))
        _write_synced(tmp / STATE_FILE, lambda f: f.write(state_bytes))
        for stale in atomic.aside_dirs(final):  # a crash's leftovers: the new best replaces them
            shutil.rmtree(stale, ignore_errors=True)
        atomic.replace_dir(tmp, final)
        tmp = None
    except OSError as e:
        raise write_error(
            final, len(model_bytes) + len(state_bytes), e, what="the best checkpoint"
        ) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
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


def write_stop_record(run_dir: Path, env_steps: int, error: BaseException) -> None:
    """Record why a run stopped part way (best effort: a full disk may refuse this too)."""
    last = latest_checkpoint(run_dir) if (Path(run_dir) / CHECKPOINTS_DIR).is_dir() else None
    record = {
        "env_steps": env_steps,
        "error": type(error).__name__,
        "message": str(error),
        "last_good_checkpoint": last.name if last is not None else None,
    }
    try:
        atomic_write_json(Path(run_dir) / STOP_FILE, record)
    except RunDirWriteError as e:
        logger.warning("could not record why the run stopped: %s", e)


def read_stop_record(run_dir: Path) -> dict[str, Any] | None:
    """What `write_stop_record` wrote, or None (the run did not stop on an error, or it was lost)."""
    try:
        return dict(json.loads((Path(run_dir) / STOP_FILE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, ValueError):
        return None


def clear_stop_record(run_dir: Path) -> None:
    path = Path(run_dir) / STOP_FILE
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:  # only a later message would repeat the old reason
        logger.warning("could not remove %s: %s", path, e)


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
