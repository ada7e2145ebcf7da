"""The picture beside a `qmix-eval` report: where the team's step time went, and what the faults did
to each episode's return.

Left, the team step exchange times on a log axis, split into steps where every agent answered and
steps where at least one agent got the fallback action, with p50 and p99 and the step deadline
drawn: a missing reply is replaced at the deadline, so fallback steps pile up at that line. Right,
each episode's return next to the one-process reference, with every planned fault marked where it
struck on the same episode axis (whole-number ticks).

No torch here; matplotlib is imported lazily, and its absence is a note, not an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmix_edge.common import atomic

from ..records import Record, Step

_FAULT_COLORS = {"kill": "tab:red", "stall": "tab:purple", "restart_coordinator": "tab:brown"}


def fault_positions(
    faults: Sequence[Mapping[str, Any]], records: Sequence[Record]
) -> list[tuple[float, str]]:
    """(position on the episode axis, label) of each fault that strikes at a team step.

    Position = episode index + the step's fraction of that episode (a kill at step 5 of a
    10-step episode 2 sits at 2.5). Drops strike throughout and have no one position; a fault
    whose step the run never reached is left out."""
    at: dict[int, tuple[int, int]] = {}  # team_step -> (episode_index, step)
    length: dict[int, int] = {}  # episode_index -> steps seen
    for r in records:
        if isinstance(r, Step):
            e = r.episode_index
            at.setdefault(r.team_step, (e, r.step))
            length[e] = max(length.get(e, 0), r.step + 1)
    out = []
    for f in faults:
        if f["kind"] == "drop" or int(f["at_step"]) not in at:
            continue
        e, k = at[int(f["at_step"])]
        who = f" {f['agent']}" if f.get("agent") else ""
        out.append((e + k / max(length[e], 1), f"{f['kind']}{who}"))
    return out


def write_picture(report: Mapping[str, Any], records: Sequence[Record], path: Path) -> str:
    """Draw the report (`draw_report`) to ``path`` atomically; returns a note of what was written."""
    return save_figure(lambda: draw_report(report, records), path)


def save_figure(draw: Callable[[], Any], path: Path) -> str:
    """The figure ``draw()`` makes, written to ``path`` atomically; returns a note of what was
    written (or why nothing was: matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no picture: matplotlib is missing (pip install 'qmix-edge[sim]')"
    fig = draw()
    tmp = atomic.temp_path_beside(path, ".png")  # the suffix tells matplotlib the format
    try:
        fig.savefig(tmp, dpi=80)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    atomic.replace_file(tmp, path)
    return f"picture written to {path}"


def draw_report(report: Mapping[str, Any], records: Sequence[Record]) -> Any:
    """The report's figure (matplotlib): latency histogram left, returns per episode right."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in records if isinstance(r, Step)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    _latency(ax1, steps, report)
    _returns(ax2, report, records)
    for axis in (ax1.yaxis, ax2.xaxis):  # counts of steps, and episodes, are whole numbers
        axis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def _latency(ax: Any, steps: Sequence[Step], report: Mapping[str, Any]) -> None:
    ms = np.asarray([r.exchange_us / 1000.0 for r in steps])  # (team steps,)
    fell_back = np.asarray([bool(r.fallback) for r in steps], dtype=bool)
    deadline = report.get("step_deadline_ms")
    ax.set_title("team step latency")
    ax.set_xlabel("team step exchange (ms, log scale)")
    ax.set_ylabel("team steps")
    if not len(ms):
        ax.text(0.5, 0.5, "no steps recorded", ha="center", transform=ax.transAxes)
        return
    low = max(float(ms.min()), 1e-3)
    high = max(float(ms.max()), float(deadline or 0.0)) * 1.15
    bins = np.geomspace(low * 0.9, high, 60)
    ax.hist(
        [ms[~fell_back], ms[fell_back]],
        bins=bins,
        stacked=True,
        color=["tab:blue", "tab:orange"],
        label=[
            f"every agent answered ({int((~fell_back).sum())})",
            f"a fallback was applied ({int(fell_back.sum())})",
        ],
    )
    ax.set_xscale("log")
    p50, p99 = np.percentile(ms, [50, 99])
    ax.axvline(p50, color="black", linestyle="-", linewidth=1, label=f"p50 {p50:.3g} ms")
    ax.axvline(p99, color="black", linestyle=":", linewidth=1.2, label=f"p99 {p99:.3g} ms")
    if deadline:
        ax.axvline(
            float(deadline),
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"deadline {deadline} ms: a missing reply\nbecomes the fallback here",
        )
    ax.legend(fontsize=8, loc="upper center")


def _returns(ax: Any, report: Mapping[str, Any], records: Sequence[Record]) -> None:
    eps = report["episodes"]
    x = [e["episode_index"] for e in eps]
    ax.plot(x, [e["reference_return"] for e in eps], "o-", label="reference (1 process)")
    ax.plot(
        x,
        [np.nan if e["return"] is None else e["return"] for e in eps],
        "x--",
        label="distributed",
    )
    for n, (pos, label) in enumerate(fault_positions(report["faults"], records)):
        color = _FAULT_COLORS.get(label.split()[0], "tab:gray")
        ax.axvline(pos, color=color, linestyle=":", linewidth=1.2)
        right_half = pos > (len(eps) - 1) / 2
        ax.annotate(
            f" {label} " if not right_half else f"{label} ",
            (pos, 0.98 - 0.07 * (n % 4)),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color=color,
            ha="right" if right_half else "left",
            va="top",
        )
    drops = [f for f in report["faults"] if f["kind"] == "drop"]
    title = "returns per episode (faults marked where they struck)"
    if drops:
        title += "\n" + ", ".join(
            f"drop {f['agent']} {float(f['fraction']):.0%} throughout" for f in drops
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("episode")
    ax.set_ylabel("team return")
    ax.legend(fontsize=8, loc="lower right")
