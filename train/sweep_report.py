"""A sweep's results table and picture, from its finished trials' results.

Per config, across its seeds: the final greedy return (mean ± std, best), the best greedy return of
each run (mean ± std, best), and the time to the target return (env steps and wall seconds, mean
over the seeds that reached it, with how many did). Written as ``results.md`` (for people),
``results.csv`` (for programs) and ``curves.png`` (one panel per config, one line per seed), all
atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .run_files import atomic_write_bytes

if TYPE_CHECKING:
    from .sweep import SweepSpec, Trial

logger = logging.getLogger(__name__)

TABLE_MD = "results.md"
TABLE_CSV = "results.csv"
CURVES_PNG = "curves.png"

COLUMNS = (
    "config",
    "seeds_done",
    "final_mean",
    "final_std",
    "final_best",
    "best_mean",
    "best_std",
    "best_best",
    "target",
    "reached",
    "steps_to_target",
    "seconds_to_target",
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, population std) of the values; (nan, nan) for none."""
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def table_rows(
    spec: SweepSpec, results: Sequence[Mapping[str, Any]], trials: Sequence[Trial]
) -> list[dict[str, Any]]:
    """One row per config (grid order) with the `COLUMNS` figures over its finished seeds."""
    rows = []
    for name, _values in spec.configs():
        mine = [r for r in results if r["config"] == name]
        n_trials = sum(1 for t in trials if t.config_name == name)
        finals = [float(r["final_return"]) for r in mine]
        bests = [float(r["best_return"]) for r in mine]
        fm, fs = mean_std(finals)
        bm, bs = mean_std(bests)
        hit = [r for r in mine if r.get("steps_to_target") is not None]
        rows.append(
            {
                "config": name,
                "seeds_done": f"{len(mine)}/{n_trials}",
                "final_mean": fm,
                "final_std": fs,
                "final_best": max(finals, default=math.nan),
                "best_mean": bm,
                "best_std": bs,
                "best_best": max(bests, default=math.nan),
                "target": spec.target_return,
                "reached": f"{len(hit)}/{len(mine)}" if spec.target_return is not None else "",
                "steps_to_target": mean_std([float(r["steps_to_target"]) for r in hit])[0],
                "seconds_to_target": mean_std([float(r["seconds_to_target"]) for r in hit])[0],
            }
        )
    return rows


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown_table(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as Markdown, with the grid values of each config and the units."""
    configs = dict(spec.configs())
    keys = list(spec.grid)
    head = ["config", *keys, "seeds", "final greedy return", "best final", "best greedy return"]
    head += ["best of best"]
    if spec.target_return is not None:
        head += [f"reached {spec.target_return:g}", "env steps to target", "seconds to target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = configs[r["config"]]
        cells = [r["config"], *(str(values[k]) for k in keys), r["seeds_done"]]
        cells += [f"{_fmt(r['final_mean'])} ± {_fmt(r['final_std'])}", _fmt(r["final_best"])]
        cells += [f"{_fmt(r['best_mean'])} ± {_fmt(r['best_std'])}", _fmt(r["best_best"])]
        if spec.target_return is not None:
            cells += [r["reached"], _fmt(r["steps_to_target"], 0), _fmt(r["seconds_to_target"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\nGreedy returns over each run's evaluation episodes; mean ± std (population) and best "
        f"across seeds {list(spec.seeds)}; {spec.total_timesteps} env steps per run. 'best greedy "
        "return' is each run's best evaluation. Time to target: mean over the seeds that reached it."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def write_report(
    spec: SweepSpec, sweep_dir: Path, results: Sequence[Mapping[str, Any]], trials: Sequence[Trial]
) -> None:
    """Write ``results.md``, ``results.csv`` and ``curves.png`` into ``sweep_dir``."""
    rows = table_rows(spec, results, trials)
    atomic_write_bytes(sweep_dir / TABLE_MD, markdown_table(spec, rows).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if _fmt(r[k]) == "-" else r[k]) for k in COLUMNS})
    atomic_write_bytes(sweep_dir / TABLE_CSV, buf.getvalue().encode())
    try:
        atomic_write_bytes(sweep_dir / CURVES_PNG, curves_png(spec, results))
    except ImportError as e:
        logger.warning("no curves picture (%s); install qmix-edge[train] for matplotlib", e)


def curves_png(spec: SweepSpec, results: Sequence[Mapping[str, Any]]) -> bytes:
    """One panel per config, one line per seed: greedy return against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = spec.configs()
    n = len(configs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, _values) in zip(axes.flat, configs, strict=False):
        for r in sorted((r for r in results if r["config"] == name), key=lambda r: r["seed"]):
            pts = r["curve"]
            if pts:
                ax.plot(
                    [p[0] for p in pts], [p[2] for p in pts], marker=".", label=f"seed {r['seed']}"
                )
        if spec.target_return is not None:
            ax.axhline(
                spec.target_return, color="grey", linestyle="--", linewidth=1, label="target"
            )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy return")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()
