"""``qmix-eval --field``'s report: each scenario's returns beside the lockstep reference on the
same seeds (`build_field_report`), its human summary (`field_summary_text`), and `write_field_report`
(the JSON and, beside it, a picture of every scenario's episodes and mean return side by side).
No torch here; matplotlib is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qmix_edge.common import atomic

from .config import EvalConfig
from .picture import save_figure

KILL_GOAL = 0.10
"""With mission control killed mid-mission, the mean return stays within this fraction of the
undisturbed run's (the agents fly on)."""


GAP_GOAL_PERIODS = 2.0
"""...and no agent goes longer than this many control periods without deciding."""


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if len(xs) else None


def build_field_report(
    cfg: EvalConfig,
    agent_ids: Sequence[str],
    reference: Sequence[float],
    scenarios: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The report document (its keys are its format)."""
    ref_mean = _mean(reference)
    out: dict[str, Any] = {}
    for name, s in scenarios.items():
        returns = list(s["returns"])
        alone = [i for i, sub in enumerate(s["substituted"]) if not any(sub.values())]
        mean = _mean(returns)
        out[name] = {
            **s,
            "mean": mean,
            "vs_reference": None if mean is None or ref_mean is None else mean - ref_mean,
            "played_alone": len(alone),
            "equal_to_reference": sum(
                1 for i in range(min(len(returns), len(reference))) if returns[i] == reference[i]
            ),
        }
    goal = None
    own, killed = out.get("own_clocks"), out.get("coordinator_killed")
    middle = cfg.episodes // 2
    if own and killed and len(own["returns"]) > middle and len(killed["returns"]) > middle:
        base, hit = own["returns"][middle], killed["returns"][middle]
        gap = killed["middle_episode_gap_periods"]
        within = abs(hit - base) <= KILL_GOAL * max(abs(base), 1e-9)
        goal = {
            "episode": middle,
            "return": hit,
            "undisturbed_return": base,
            "relative_difference": abs(hit - base) / max(abs(base), 1e-9),
            "limit": KILL_GOAL,
            "decision_gap_periods": gap,
            "gap_limit_periods": GAP_GOAL_PERIODS,
            "met": within and gap is not None and gap <= GAP_GOAL_PERIODS,
        }
    return {
        "kind": "field",
        "artifacts": str(cfg.artifacts),
        "agents": list(agent_ids),
        "episodes": cfg.episodes,
        "seed": cfg.seed,
        "rate_hz": cfg.field_rate_hz,
        "reference": {"returns": list(reference), "mean": ref_mean},
        "scenarios": out,
        "coordinator_kill_goal": goal,
    }


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def field_summary_text(report: Mapping[str, Any]) -> str:
    ref = report["reference"]
    lines = [
        f"field evaluation: {report['episodes']} episodes per scenario at {report['rate_hz']:g} "
        f"Hz, seeds from {report['seed']}; lockstep reference mean return {_num(ref['mean'])}"
    ]
    for name, s in report["scenarios"].items():
        extra = ""
        if s.get("link"):
            link = s["link"]
            extra = (
                f"; link {link['delay_ms']:g} ms +{link['jitter_ms']:g} ms jitter, loss "
                f"{link['loss']:g} ({link['dropped']} of {link['forwarded'] + link['dropped']} "
                "datagrams dropped)"
            )
        if s.get("coordinator_down_s") is not None:
            extra = f"; mission control down {s['coordinator_down_s']:.1f} s"
        lines.append(
            f"  {name}: mean {_num(s['mean'])} (reference {_num(s['vs_reference'], '+.3f')}), "
            f"{s['equal_to_reference']}/{len(s['returns'])} episodes equal to the reference, "
            f"{s['played_alone']} without a substituted action; starts agree within "
            f"{_num(s['start_spread_ms'], '.1f')} ms{extra}"
        )
    goal = report.get("coordinator_kill_goal")
    if goal:
        verdict = "met" if goal["met"] else "NOT met"
        lines.append(
            f"  mission control killed in episode {goal['episode']}: its return "
            f"{goal['return']:.3f} against {goal['undisturbed_return']:.3f} undisturbed "
            f"({goal['relative_difference']:.1%}, limit {goal['limit']:.0%}); longest time "
            f"without a decision {_num(goal['decision_gap_periods'], '.2f')} periods (limit "
            f"{goal['gap_limit_periods']:g}): {verdict}"
        )
    return "\n".join(lines)


def draw_field_report(report: Mapping[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ref = report["reference"]["returns"]
    xs = np.arange(len(ref))
    left.plot(xs, ref, "k--", marker="o", label="lockstep reference")
    names = list(report["scenarios"])
    for name in names:
        r = report["scenarios"][name]["returns"]
        left.plot(np.arange(len(r)), r, marker=".", label=name.replace("_", " "))
    if "coordinator_killed" in report["scenarios"]:
        left.axvline(
            report["episodes"] // 2, color="tab:red", ls=":", label="mission control killed"
        )
    left.set_xlabel("episode")
    left.set_ylabel("team return")
    left.set_title("each episode, same seeds")
    left.legend(fontsize=8)
    means = [report["scenarios"][n]["mean"] or 0.0 for n in names]
    right.bar(range(len(names)), means, color="tab:blue")
    if report["reference"]["mean"] is not None:
        right.axhline(report["reference"]["mean"], color="k", ls="--", label="lockstep reference")
    right.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    right.set_ylabel("mean team return")
    right.set_title("agents on their own clocks, side by side")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_field_report(report: dict[str, Any], path: Path) -> None:
    """The JSON at ``path`` and the picture beside it (``.png``), each atomically; the picture's
    note goes into ``report["picture_note"]``."""
    report["picture_note"] = save_figure(
        lambda: draw_field_report(report), path.with_suffix(".png")
    )
    atomic.write_json(path, report, indent=2)
