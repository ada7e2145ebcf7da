"""The runtime's exception family (coordinator, agent, wire codec, evaluation harness).

Artifact problems have their own family in `qmix_edge.runtime.artifact`. No torch here.
"""

from __future__ import annotations

import grpc


class RuntimeFailure(Exception):
    """Base of every error the runtime raises on purpose."""


class WireError(RuntimeFailure, ValueError):
    """A message or tensor on the wire is malformed (wrong dtype, shape, size, or non-finite)."""


class TeamMismatchError(RuntimeFailure):
    """The environment, the artifact manifest and the team configuration disagree."""


class JoinRefused(RuntimeFailure):
    """The coordinator refused a Join; `code` is the gRPC status code it answered with."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(f"join refused ({code.name}): {detail}")
        self.code = code
        """The gRPC status code of the refusal."""
        self.detail = detail
        """The coordinator's explanation."""


class FaultPlanError(RuntimeFailure, ValueError):
    """A fault plan for qmix-eval is malformed."""
