"""The coordinator: one server per team. Agents dial in and join; in simulation it owns the env
and clocks the steps, in the field it is mission control. ``python -m qmix_edge.runtime.coordinator``
is ``qmix-coordinator``."""

from __future__ import annotations

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
from .core import (
    ENV_ERROR_LIMIT,
    AgentCounters,
    AgentSlot,
    Coordinator,
    RunSummary,
    TeamSpec,
    build_parser,
    main,
    make_team_env,
    server_security,
    summary_lines,
)

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
    "Coordinator",
    "CoordinatorConfig",
    "Mode",
    "RunSummary",
    "TeamPolicy",
    "TeamSpec",
    "build_parser",
    "main",
    "make_team_env",
    "server_security",
    "step_lane_port",
    "summary_lines",
]
