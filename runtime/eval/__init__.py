"""Simulated multi-device evaluation: a coordinator and one OS process per agent, faults on demand,
a report. ``python -m qmix_edge.runtime.eval`` is ``qmix-eval``."""

from __future__ import annotations

from .config import EvalConfig, EvalSecurity
from .faults import (
    FAULT_KINDS,
    Fault,
    FaultKind,
    check_fault_plan,
    parse_fault_plan,
    read_fault_plan,
)
from .harness import (
    FAULT_COST_MEANS,
    build_parser,
    build_report,
    evaluate,
    last_error_line,
    main,
    run_distributed,
    run_reference,
    summary_text,
)

__all__ = [
    "FAULT_COST_MEANS",
    "FAULT_KINDS",
    "EvalConfig",
    "EvalSecurity",
    "Fault",
    "FaultKind",
    "build_parser",
    "build_report",
    "check_fault_plan",
    "evaluate",
    "last_error_line",
    "main",
    "parse_fault_plan",
    "read_fault_plan",
    "run_distributed",
    "run_reference",
    "summary_text",
]
