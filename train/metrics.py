"""Run metrics: JSON lines, TensorBoard scalars and the learning-curve picture.

Metric names are namespaced: ``rollout/`` (training episodes), ``train/`` (learner updates),
``eval/`` (greedy evaluation), ``time/`` (throughput and wall time). Every record carries the env-step
counter ``step`` and the run's wall seconds ``time``. ``metrics.jsonl`` is appended (a resumed run
continues the same file), the PNG is rewritten atomically (by the trainer: every 30 s
of a session and at its end).
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from .run_files import atomic_write_bytes, write_error

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
TB_DIR = "tb"


class MetricsLogger:
    """Writes metric records to ``run_dir`` (JSONL always; TensorBoard when available)."""

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, purge_step: int | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._file = self._open()
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: a resumed run hides events a killed session wrote after its checkpoint.
                self._tb = SummaryWriter(log_dir=str(self.run_dir / TB_DIR), purge_step=purge_step)
            except ImportError as e:  # tensorboard is part of [train]; keep going without it
                logger.warning("TensorBoard logging is off (%s); install qmix-edge[train]", e)
        self.eval_points: list[tuple[int, float, float, float]] = []  # (step, seconds, mean, std)

    def log(self, step: int, wall_seconds: float, values: dict[str, float]) -> None:
        """One record: ``values`` keyed by namespaced metric name."""
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        record = {"step": step, "time": round(wall_seconds, 3), **clean}
        line = json.dumps(record) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as e:
            raise write_error(self.path, len(line.encode()), e) from e
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), global_step=step, walltime=None)
        if "eval/return_mean" in values:
            self.eval_points.append(
                (
                    step,
                    wall_seconds,
                    float(values["eval/return_mean"]),
                    float(values["eval/return_std"]),
                )
            )

    def load_eval_history(self) -> None:
        """Re-read earlier evaluation points (a resumed run's curve starts where it left off)."""
        self.eval_points.extend(read_eval_points(self.run_dir))

    def truncate_after(self, step: int) -> None:
        """Drop records newer than ``step`` (written after the checkpoint a resume starts from)."""
        self._file.close()
        kept: list[str] = []
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line)["step"]) <= step:
                        kept.append(line)
                except (json.JSONDecodeError, KeyError, ValueError):
                    continue
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n" if kept else "").encode())
        self._file = self._open()

    def _open(self) -> Any:
        try:
            return self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise write_error(self.path, None, e) from e

    def plot(
        self,
        title: str,
        *,
        random_return: float | None = None,
        exported_step: int | None = None,
        eval_episodes: int | None = None,
    ) -> Path | None:
        """Rewrite the learning curve (greedy return vs env steps and vs wall seconds).

        The band is +- one standard deviation of the return over the ``eval_episodes`` evaluation
        episodes of each point (the spread of episodes, not an error of the mean). A dashed line
        marks ``random_return`` (the uniform-random policy on the same seeds) and a star the
        evaluation at ``exported_step`` (the checkpoint `qmix-export` takes by default).
        """
        if not self.eval_points:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot as plt
            from matplotlib.ticker import EngFormatter
        except ImportError as e:
            logger.warning("no learning-curve picture (%s); install qmix-edge[train]", e)
            return None
        steps = [p[0] for p in self.eval_points]
        secs = [p[1] for p in self.eval_points]
        mean = [p[2] for p in self.eval_points]
        std = [p[3] for p in self.eval_points]
        lo = [m - s for m, s in zip(mean, std, strict=True)]
        hi = [m + s for m, s in zip(mean, std, strict=True)]
        band = "±1 std over " + (f"{eval_episodes} " if eval_episodes else "") + "eval episodes"
        exported = [i for i, s in enumerate(steps) if s == exported_step][-1:]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
        for ax, x, label in ((axes[0], steps, "env steps"), (axes[1], secs, "wall seconds")):
            ax.plot(x, mean, marker="o", ms=3, label="greedy return (mean)")
            ax.fill_between(x, lo, hi, alpha=0.2, label=band)
            if random_return is not None and math.isfinite(random_return):
                ax.axhline(
                    random_return,
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label=f"random policy ({random_return:.1f})",
                )
            for i in exported:
                ax.plot(
                    [x[i]],
                    [mean[i]],
                    marker="*",
                    ms=14,
                    color="tab:red",
                    linestyle="none",
                    label=f"exported: best ({mean[i]:.1f} at {steps[i]:,} steps)",
                )
            ax.set_xlabel(label)
            ax.set_xlim(left=0)  # every curve starts at the start of training
            ax.grid(alpha=0.3)
        axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))  # 800k, not 800000 (labels overlap)
        axes[0].set_ylabel("greedy team return")
        axes[0].legend(loc="lower right", fontsize="small")
        fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        # The picture says what it marks in its PNG text too (for tools and tests).
        meta = {"Title": title, "band": band, "x_starts_at": "0"}
        if random_return is not None:
            meta["random_return"] = f"{random_return:.4f}"
        if exported:
            meta["exported_step"] = str(steps[exported[0]])
        fig.savefig(buf, format="png", dpi=100, metadata=meta)
        plt.close(fig)
        path = self.run_dir / CURVE_FILE
        atomic_write_bytes(path, buf.getvalue())
        return path

    def close(self) -> None:
        """Close the files; a failure here (a full disk) is logged, not raised over the run's error."""
        try:
            self._file.close()
        except OSError as e:
            logger.warning("could not close %s: %s", self.path, e)
        if self._tb is not None:
            try:
                self._tb.close()
            except Exception as e:  # TensorBoard's writer thread may fail on a full disk
                logger.warning("could not close the TensorBoard log: %s", e)


def read_eval_points(run_dir: Path) -> list[tuple[int, float, float, float]]:
    """(env step, wall seconds, greedy return mean, std) of every evaluation in a run's metrics."""
    path = Path(run_dir) / METRICS_FILE
    points: list[tuple[int, float, float, float]] = []
    if not path.exists():
        return points
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("eval/return_mean") is not None:
                points.append(
                    (
                        int(rec["step"]),
                        float(rec["time"]),
                        float(rec["eval/return_mean"]),
                        float(rec.get("eval/return_std") or 0.0),
                    )
                )
    return points
