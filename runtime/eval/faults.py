"""Fault plans for qmix-eval: which failure hits which agent at which team step."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..errors import FaultPlanError

FaultKind = Literal["kill", "stall", "drop", "restart_coordinator"]
FAULT_KINDS: tuple[str, ...] = ("kill", "stall", "drop", "restart_coordinator")


@dataclass(frozen=True)
class Fault:
    """One failure to inject."""

    kind: FaultKind
    """``kill`` (SIGKILL the agent, restart it), ``stall`` (the agent sleeps before one reply),
    ``drop`` (the agent leaves a fraction of requests unanswered), ``restart_coordinator``."""
    agent: str | None = None
    """The agent it hits (not for restart_coordinator)."""
    at_step: int = 0
    """Team step (counted over the whole run) at which it happens (kill, stall, restart)."""
    restart_after_ms: int = 300
    """kill / restart_coordinator: down time before the process is started again."""
    duration_ms: int = 0
    """stall: how long the agent sleeps before answering."""
    fraction: float = 0.0
    """drop: fraction of step requests left unanswered, in [0, 1]."""
    seed: int = 0
    """drop: seed of the drop decisions."""


def parse_fault_plan(text_or_path: str, agent_ids: Sequence[str]) -> tuple[Fault, ...]:
    """Read a fault plan (`read_fault_plan`) and check it against the team (`check_fault_plan`)."""
    return check_fault_plan(read_fault_plan(text_or_path), agent_ids)


def read_fault_plan(text_or_path: str) -> tuple[Fault, ...]:
    """Read a fault plan: a value starting with ``[`` or ``{`` (after blanks) is the JSON itself,
    whatever its length; anything else is a file's path. Checks each fault's own fields."""
    inline = text_or_path.lstrip().startswith(("[", "{"))
    try:
        text = text_or_path if inline else Path(text_or_path).read_text()
    except OSError as e:
        raise FaultPlanError(
            f"--faults: expected inline JSON (starting with '[') or the path of a JSON file; "
            f"could not read the file {text_or_path[:200]!r} ({e.strerror or e})"
        ) from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        where = "the inline --faults value" if inline else f"the file {text_or_path!r}"
        raise FaultPlanError(
            f"--faults: {where} is not valid JSON ({e}); expected a JSON list of faults such as "
            '[{"kind": "kill", "agent": "agent_0", "at_step": 5}]'
        ) from e
    if not isinstance(raw, list):
        raise FaultPlanError(f"a fault plan is a JSON list of faults; found {type(raw).__name__}")
    faults = []
    fields = set(Fault.__dataclass_fields__)
    for n, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - fields:
            unknown = sorted(set(item) - fields) if isinstance(item, dict) else item
            raise FaultPlanError(f"fault {n}: unknown fields {unknown}; allowed {sorted(fields)}")
        try:
            f = Fault(**item)
        except TypeError as e:
            raise FaultPlanError(f"fault {n}: {e}") from e
        if f.kind not in FAULT_KINDS:
            raise FaultPlanError(f"fault {n}: kind must be one of {FAULT_KINDS}; found {f.kind!r}")
        if not 0.0 <= f.fraction <= 1.0 or f.at_step < 0 or f.duration_ms < 0:
            raise FaultPlanError(f"fault {n}: fraction in [0, 1], at_step and durations >= 0")
        faults.append(f)
    return tuple(faults)


def check_fault_plan(faults: Sequence[Fault], agent_ids: Sequence[str]) -> tuple[Fault, ...]:
    """``faults`` when every one names an agent of the team and no agent gets one kind twice."""
    for n, f in enumerate(faults):
        if f.kind != "restart_coordinator" and f.agent not in agent_ids:
            raise FaultPlanError(
                f"fault {n}: agent must be one of {list(agent_ids)}; found {f.agent!r}"
            )
    per_agent = defaultdict(list)
    for f in faults:
        per_agent[(f.kind, f.agent)].append(f)
    dup = [k for k, v in per_agent.items() if len(v) > 1 and k[0] != "restart_coordinator"]
    if dup:
        raise FaultPlanError(f"one fault of each kind per agent; found repeats of {dup}")
    return tuple(faults)


def fault_plan_json(faults: Sequence[Fault]) -> str:
    """The plan as the inline JSON `read_fault_plan` reads back."""
    return json.dumps([asdict(f) for f in faults])
