"""Simulated multi-device evaluation: a coordinator and one OS process per agent, faults on demand,
a report. ``python -m qmix_edge.runtime.eval`` is ``qmix-eval``."""

from __future__ import annotations

from .harness import (
    FAULT_COST_MEANS,
    FAULT_KINDS,
    EvalConfig,
    EvalSecurity,
    Fault,
    FaultKind,
    build_parser,
    build_report,
    evaluate,
    last_error_line,
    main,
    parse_fault_plan,
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
    "evaluate",
    "last_error_line",
    "main",
    "parse_fault_plan",
    "run_distributed",
    "run_reference",
    "summary_text",
]
