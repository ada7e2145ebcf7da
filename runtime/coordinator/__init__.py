"""The coordinator: one server per team. Agents dial in and join; in simulation it owns the env
and clocks the steps, in the field it is mission control. ``python -m qmix_edge.runtime.coordinator``
is ``qmix-coordinator``.

The package, one layer a module:

- `team`: the seats an artifact describes (`TeamSpec`) and the simulation env made for them.
- `sessions`: who holds which seat; where a Join is decided (`Sessions.join`), attach, leave.
- `authorize`: the one identity rule (`Authority.authorize`) both carriers ask.
- `clock` and `sources`: the step clock (`StepClock`) fed by a `StepSource` (simulated env or
  field); `replies`: where a reply is accepted or discarded (`StepWindow.accept`).
- `grpc_service`: the Team service on gRPC; `lane_server`: the step lane's server side.
- `server`: the lifecycle (`Coordinator`: event loop, start, run, graceful stop, close).
- `summary` and `record`: what a run did and the run record it writes; `cli`: qmix-coordinator.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

from .authorize import Authority, Credentials
from .cli import build_parser, main, server_security
from .clock import ENV_ERROR_LIMIT, StepClock
from .config import (
    EXIT_FAILURE,
    EXIT_INCOMPLETE_TEAM,
    EXIT_OK,
    EXIT_USAGE,
    MODES,
    STEP_DEADLINE_MS,
    TEAM_POLICIES,
    CoordinatorConfig,
    Mode,
    TeamPolicy,
    step_lane_port,
)
from .server import Coordinator
from .sessions import Refusal, Session, Sessions
from .sources import FieldSource, SimulatedSource, StepSource
from .summary import AgentCounters, RunSummary, summary_lines
from .team import AgentSlot, TeamSpec, check_env_matches, make_team_env

__all__ = [
    "ENV_ERROR_LIMIT",
    "EXIT_FAILURE",
    "EXIT_INCOMPLETE_TEAM",
    "EXIT_OK",
    "EXIT_USAGE",
    "MODES",
    "STEP_DEADLINE_MS",
    "TEAM_POLICIES",
    "AgentCounters",
    "AgentSlot",
    "Authority",
    "Coordinator",
    "CoordinatorConfig",
    "Credentials",
    "FieldSource",
    "Mode",
    "Refusal",
    "RunSummary",
    "Session",
    "Sessions",
    "SimulatedSource",
    "StepClock",
    "StepSource",
    "TeamPolicy",
    "TeamSpec",
    "build_parser",
    "check_env_matches",
    "main",
    "make_team_env",
    "server_security",
    "step_lane_port",
    "summary_lines",
]
