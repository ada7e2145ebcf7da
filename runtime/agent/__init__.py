"""The agent: one process per device, deciding from local inputs with onnxruntime and no torch.
``python -m qmix_edge.runtime.agent`` is ``qmix-agent``."""

from __future__ import annotations

from .runner import (
    FATAL_JOIN_CODES,
    AgentFaults,
    AgentRunner,
    AgentStats,
    Backoff,
    Carrier,
    PolicyLike,
    build_parser,
    client_security,
    load_policy,
    main,
)

__all__ = [
    "FATAL_JOIN_CODES",
    "AgentFaults",
    "AgentRunner",
    "AgentStats",
    "Backoff",
    "Carrier",
    "PolicyLike",
    "build_parser",
    "client_security",
    "load_policy",
    "main",
]
