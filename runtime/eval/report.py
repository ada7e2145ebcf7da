"""qmix-eval's report: what the coordinator's run record says, set against the reference returns
(`build_report`, the JSON document), its human summary (`summary_text`) and `write_report`, which
writes the JSON and the picture beside it (`picture`), each atomically.

The report is a JSON document for users and tools (its keys are its format); the run record it
is built from is read as typed records (`qmix_edge.runtime.records`). No torch here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qmix_edge.common import atomic

from ..records import Attach, EpisodeEnd, Join, Record, Step
from .config import EvalConfig
from .picture import write_picture


def _percentiles(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, dtype=np.float64)
    return {
        "n": len(xs),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def build_report(
    cfg: EvalConfig,
    agent_ids: Sequence[str],
    records: Sequence[Record],
    reference: Sequence[float],
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the run record says, set against the reference returns."""
    ends: dict[int, EpisodeEnd] = {}
    for r in records:
        if isinstance(r, EpisodeEnd) and r.reason != "stopped":
            ends[r.episode_index] = r
    steps = [r for r in records if isinstance(r, Step)]
    latency = [float(r.exchange_us) for r in steps]
    per_agent: dict[str, dict[str, Any]] = {
        a: {
            "fallbacks": 0,
            "invalid": 0,
            "late_replies": 0,
            "joins": 0,
            "decision_us": [],
            "carriers": set(),
            "joined_via": set(),
        }
        for a in agent_ids
    }
    per_episode_fallbacks: dict[int, int] = defaultdict(int)
    per_episode_late: dict[int, int] = defaultdict(int)
    per_episode_invalid: dict[int, int] = defaultdict(int)
    for r in steps:
        for a in r.fallback:
            per_agent[a]["fallbacks"] += 1
        per_episode_fallbacks[r.episode_index] += len(r.fallback)
        for a in r.invalid:
            per_agent[a]["invalid"] += 1
            per_episode_invalid[r.episode_index] += 1
        for a, k in r.late.items():
            per_agent[a]["late_replies"] += int(k)
            per_episode_late[r.episode_index] += int(k)
        for a, us in r.decision_us.items():
            per_agent[a]["decision_us"].append(float(us))
    for r in records:
        if isinstance(r, Join):
            per_agent[r.agent_id]["joins"] += 1
            per_agent[r.agent_id]["joined_via"].add(r.via)
        elif isinstance(r, Attach):
            per_agent[r.agent_id]["carriers"].add(r.carrier)
    starts = int(facts.get("coordinator_starts", 1))
    agents_out = {}
    for a, d in per_agent.items():
        # Every coordinator restart makes every agent join again; those are not agent faults.
        agents_out[a] = {
            "fallbacks": d["fallbacks"],  # steps the legal-action rule replaced (missing/invalid)
            "invalid": d["invalid"],  # replies out of range or masked (among the fallbacks)
            "late_replies": d["late_replies"],
            "joins": d["joins"],
            "rejoins": max(0, d["joins"] - 1),
            "rejoins_after_agent_faults": max(0, d["joins"] - starts),
            "decision_us": _percentiles(d["decision_us"]),
            "carriers": sorted(d["carriers"]),  # "lane" / "stream": what its steps travelled on
            "joined_via": sorted(d["joined_via"]),  # "lane" (no gRPC in the agent) / "grpc"
        }
    episodes = []
    for i in range(cfg.episodes):
        e = ends.get(i)
        ref = reference[i] if i < len(reference) else None
        ret = e.team_return if e else None
        episodes.append(
            {
                "episode_index": i,
                "seed": cfg.seed + i,
                "return": ret,
                "reference_return": ref,
                "equal": ret is not None and ret == ref,
                "steps": e.steps if e else None,
                "reason": e.reason if e else "missing",
                "fallbacks": per_episode_fallbacks.get(i, 0),
                "invalid": per_episode_invalid.get(i, 0),
                "late_replies": per_episode_late.get(i, 0),
                "absent": list(e.absent) if e else [],  # seats empty at some step
                "error": e.error if e else None,  # reason env_error: what the env raised
            }
        )
    done = [e for e in episodes if e["return"] is not None]
    mean_ret = float(np.mean([e["return"] for e in done])) if done else None
    mean_ref = float(np.mean(reference)) if len(reference) else None
    return {
        "artifacts": str(cfg.artifacts),
        "env": cfg.env,
        "seed": cfg.seed,
        "step_deadline_ms": cfg.step_deadline_ms,
        "n_episodes": cfg.episodes,
        "faults": [asdict(f) for f in cfg.faults],
        "parity": {
            "all_equal": all(e["equal"] for e in episodes),
            "unequal_episodes": [e["episode_index"] for e in episodes if not e["equal"]],
        },
        "mean_return": mean_ret,
        "mean_reference_return": mean_ref,
        "fault_cost": (mean_ref - mean_ret)
        if mean_ret is not None and mean_ref is not None
        else None,
        "fault_cost_means": FAULT_COST_MEANS,
        "team_steps": len(steps),
        "step_latency_us": _percentiles(latency),
        "agents": agents_out,
        "totals": {
            "fallbacks": sum(d["fallbacks"] for d in agents_out.values()),
            "invalid": sum(d["invalid"] for d in agents_out.values()),
            "late_replies": sum(d["late_replies"] for d in agents_out.values()),
            "incomplete_team_episodes": sum(1 for e in episodes if e["absent"]),
            "env_errors": sum(1 for e in episodes if e["reason"] == "env_error"),
            "rejoins": sum(d["rejoins_after_agent_faults"] for d in agents_out.values()),
            "coordinator_restarts": starts - 1,
        },
        "process": dict(facts),
        "episodes": episodes,
    }


FAULT_COST_MEANS = (
    "reference mean minus distributed mean: positive = the faults lowered the team return, "
    "negative = the faulty run happened to score higher"
)
"""What the report's ``fault_cost`` is, said in the report itself and its summary."""


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _why_unequal(report: Mapping[str, Any]) -> str:
    """Whether the unequal episodes are explained by fallbacks or late replies (faults at work)
    or diverged without one (what parity exists to catch)."""
    unexplained = [
        e["episode_index"]
        for e in report["episodes"]
        if not e["equal"] and e["return"] is not None and not (e["fallbacks"] or e["late_replies"])
    ]
    if unexplained:
        return f"; {unexplained} had no fallback nor late reply: a real divergence"
    return " (each had a fallback or a late reply, or did not finish)"


def summary_text(report: Mapping[str, Any]) -> str:
    lat = report["step_latency_us"]
    t = report["totals"]
    lines = [
        f"{report['n_episodes']} episodes, {report['team_steps']} team steps, "
        f"{len(report['faults'])} faults planned",
        f"mean return {_num(report['mean_return'])}  (reference "
        f"{_num(report['mean_reference_return'])}); return the faults cost "
        f"{_num(report['fault_cost'])} ({FAULT_COST_MEANS})",
        "parity: every episode equal to the reference"
        if report["parity"]["all_equal"]
        else f"parity: episodes {report['parity']['unequal_episodes']} differ from the reference"
        + _why_unequal(report),
    ]
    if lat.get("n"):
        lines.append(
            f"step latency us: p50 {lat['p50']:.0f}  p90 {lat['p90']:.0f}  p99 {lat['p99']:.0f}"
        )
    lines.append(
        f"fallbacks {t['fallbacks']} (invalid replies {t['invalid']}), late replies "
        f"{t['late_replies']}, agent rejoins {t['rejoins']}, coordinator restarts "
        f"{t['coordinator_restarts']}"
    )
    if t["incomplete_team_episodes"] or t["env_errors"]:
        lines.append(
            f"episodes with an incomplete team {t['incomplete_team_episodes']}, ended by an "
            f"environment error {t['env_errors']}"
        )
    for a, d in report["agents"].items():
        dec = d["decision_us"]
        p50 = f"{dec['p50']:.0f}" if dec.get("n") else "-"
        lines.append(
            f"  {a}: decision p50 {p50} us, fallbacks {d['fallbacks']}, invalid {d['invalid']}, "
            f"late {d['late_replies']}, joins {d['joins']}"
        )
    return "\n".join(lines)


def write_report(report: dict[str, Any], records: Sequence[Record], path: Path) -> None:
    """Write ``report`` to ``path`` as JSON and its picture beside it (``.png``), each atomically;
    the picture's note (what was drawn, or why not) goes into ``report["picture_note"]``."""
    atomic.write_json(path, report, indent=2)
    report["picture_note"] = write_picture(report, records, path.with_suffix(".png"))
