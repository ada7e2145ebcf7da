"""The agent: one process per device, deciding from local inputs with onnxruntime and no torch.
``python -m qmix_edge.runtime.agent`` is ``qmix-agent``.

- `runner`: the session loop (join, reconnect with backoff, stop): `AgentRunner`;
- `answer`: answering one step (decide, the legal-action rule, the watchdog's hold):
  `StepAnswerer`;
- `carriers`: how the coordinator is reached (the step lane, gRPC), behind one contract;
- `cli`: the qmix-agent command; `config`: its one declaration, `AgentConfig`.
"""

from __future__ import annotations

from .answer import AgentStats, PolicyLike, StepAnswerer
from .carriers import Carrier, SessionEnd, SessionHost, SessionOutcome
from .cli import build_parser, client_security, load_policy, main
from .runner import FATAL_JOIN_CODES, AgentRunner, AnswererFactory, Backoff

__all__ = [
    "FATAL_JOIN_CODES",
    "AgentRunner",
    "AgentStats",
    "AnswererFactory",
    "Backoff",
    "Carrier",
    "PolicyLike",
    "SessionEnd",
    "SessionHost",
    "SessionOutcome",
    "StepAnswerer",
    "build_parser",
    "client_security",
    "load_policy",
    "main",
]
