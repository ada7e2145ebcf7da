"""Simulated multi-device evaluation: a coordinator and one OS process per agent, faults on demand,
the same team in one process as the reference, a report. ``python -m qmix_edge.runtime.eval`` is
``qmix-eval``.

The rooms: `config` (what one evaluation is told), `faults` (the fault plan), `launcher` (the
processes), `reference` (the in-process run), `report` and `picture` (what the run record says),
`cli` (`evaluate` and the command)."""

from __future__ import annotations

from .cli import build_parser, check_config, evaluate, main
from .config import EvalConfig, EvalSecurity
from .faults import (
    FAULT_KINDS,
    Fault,
    FaultKind,
    check_fault_plan,
    parse_fault_plan,
    read_fault_plan,
)
from .launcher import last_error_line, run_distributed
from .reference import run_reference
from .report import FAULT_COST_MEANS, build_report, summary_text, write_report

__all__ = [
    "FAULT_COST_MEANS",
    "FAULT_KINDS",
    "EvalConfig",
    "EvalSecurity",
    "Fault",
    "FaultKind",
    "build_parser",
    "build_report",
    "check_config",
    "check_fault_plan",
    "evaluate",
    "last_error_line",
    "main",
    "parse_fault_plan",
    "read_fault_plan",
    "run_distributed",
    "run_reference",
    "summary_text",
    "write_report",
]
