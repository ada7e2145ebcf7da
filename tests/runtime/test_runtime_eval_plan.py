"""qmix-eval's fault plan: inline JSON of any length, or a file; clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmix_edge.runtime.errors import FaultPlanError
from qmix_edge.runtime.eval import Fault, parse_fault_plan

AGENTS = ("agent_0", "agent_1")


def test_long_inline_plan_is_json_not_a_file_name() -> None:
    plan: list[dict[str, object]] = [
        {"kind": "stall", "agent": "agent_1", "at_step": 0, "duration_ms": 10}
    ]
    plan += [{"kind": "restart_coordinator", "at_step": k} for k in range(1, 60)]
    text = "  \n" + json.dumps(plan, indent=4)  # far beyond any file name's length
    assert len(text) > 4096
    faults = parse_fault_plan(text, AGENTS)
    assert len(faults) == 60 and faults[0] == Fault("stall", "agent_1", 0, duration_ms=10)


def test_a_plan_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text('[{"kind": "drop", "agent": "agent_0", "fraction": 0.5}]')
    assert parse_fault_plan(str(path), AGENTS) == (Fault("drop", "agent_0", fraction=0.5),)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ('[{"kind": "kill", "agent": "agent_0",', r"inline --faults value is not valid JSON"),
        ("no/such/plan.json", r"could not read the file 'no/such/plan.json'"),
        ('{"kind": "kill"}', r"a fault plan is a JSON list of faults; found dict"),
    ],
)
def test_bad_plans_are_explained(value: str, match: str) -> None:
    with pytest.raises(FaultPlanError, match=match):
        parse_fault_plan(value, AGENTS)
