"""The runtime's exception family (coordinator, agent, wire codec, evaluation harness).

Every runtime error derives from `RuntimeFailure`: artifact problems (`qmix_edge.runtime.artifact`)
and policy input problems (`qmix_edge.runtime.policy`) are branches of it. No torch here.
"""

from __future__ import annotations

from typing import Final

# gRPC's status code numbers (grpc.StatusCode's values), so code that must not load grpc (an agent
# on the step lane alone) can name a refusal; a test checks this table against grpc's.
STATUS_NAMES: Final[dict[int, str]] = dict(
    enumerate(
        (
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    )
)
STATUS_CODES: Final[dict[str, int]] = {name: code for code, name in STATUS_NAMES.items()}


class RuntimeFailure(Exception):
    """Base of every error the runtime raises on purpose."""


class WireError(RuntimeFailure, ValueError):
    """A message or tensor on the wire is malformed (wrong dtype, shape, size, or non-finite)."""


class TeamMismatchError(RuntimeFailure):
    """The environment, the artifact manifest and the team configuration disagree."""


class JoinRefused(RuntimeFailure):
    """The coordinator refused a Join (on gRPC or on the step lane)."""

    def __init__(self, code: int, detail: str) -> None:
        self.code = code
        """The gRPC status code number of the refusal (`STATUS_NAMES` names it)."""
        self.detail = detail
        """The coordinator's explanation."""
        super().__init__(f"join refused ({self.code_name}): {detail}")

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``NOT_FOUND``."""
        return STATUS_NAMES.get(self.code, f"status {self.code}")


class FaultPlanError(RuntimeFailure, ValueError):
    """A fault plan for qmix-eval is malformed."""
