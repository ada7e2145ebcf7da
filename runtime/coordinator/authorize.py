"""Who may speak for which agent: the one identity rule every carrier asks (`Authority.authorize`)
before a Join, an attach or a Leave.

A carrier only reports what the caller presented (`Credentials`: the agent its verified client
certificate names, the bearer token it sent); the rule is the same on gRPC and on the step lane.
With tokens the token must be the agent's own (UNAUTHENTICATED otherwise, PERMISSION_DENIED when
it proves another agent); with mutual TLS the certificate must name the agent (PERMISSION_DENIED).
On gRPC the `TokenInterceptor` has already refused calls without a valid token of any agent.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import grpc

from ..security import SecurityConfigError, token_matches
from .sessions import Refusal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """What one caller presented, as its carrier saw it."""

    peer: str
    """The caller's address, gRPC style (``ipv4:10.0.0.2:5000``), for the log."""
    certificate: str | None = None
    """The agent id the verified client certificate names (None: no certificate, or it names
    nobody)."""
    token: str | None = None
    """The bearer token presented (None: none)."""
    token_agent_id: str | None = None
    """The agent the caller says its token belongs to (gRPC's ``x-agent-id`` metadata)."""


class Authority:
    """The identity rule of one coordinator: mutual TLS and/or per-agent bearer tokens."""

    def __init__(
        self, agent_ids: Iterable[str], *, mutual_tls: bool, tokens: Mapping[str, str] | None
    ) -> None:
        """``tokens``: agent id -> bearer token, naming exactly the team's agents."""
        team = list(agent_ids)
        if tokens is not None:
            unknown = sorted(set(tokens) - set(team))
            missing = sorted(set(team) - set(tokens))
            if unknown or missing:
                raise SecurityConfigError(
                    f"the tokens must name exactly the team's agents {team}; "
                    f"unknown ids {unknown}, agents without a token {missing}"
                )
        self.mutual_tls = mutual_tls
        self.tokens = dict(tokens) if tokens is not None else None

    def authorize(self, caller: Credentials, agent_id: str, what: str) -> None:
        """Return if ``caller`` may do ``what`` (e.g. "a Join") as ``agent_id``; else raise
        `Refusal` (UNAUTHENTICATED: no valid token of that agent; PERMISSION_DENIED: the caller
        is proven to be another agent, or its certificate names another or none)."""
        name = agent_id[:80]
        tokens = self.tokens
        if tokens is not None and not token_matches(tokens, agent_id, caller.token or ""):
            proven = caller.token_agent_id
            if proven and caller.token and token_matches(tokens, proven, caller.token):
                self._refuse(
                    caller,
                    what,
                    name,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{what} as agent {name!r} refused: this caller is authenticated as "
                    f"{proven[:80]!r} and may only speak as itself",
                )
            self._refuse(
                caller,
                what,
                name,
                grpc.StatusCode.UNAUTHENTICATED,
                f"this coordinator requires the bearer token of agent {name!r} (gRPC metadata "
                "'authorization: Bearer <token>'; on the step lane Attach.token or "
                "JoinRequest.token; qmix-agent --token-file)",
            )
        if self.mutual_tls and caller.certificate != agent_id:
            named = caller.certificate
            self._refuse(
                caller,
                what,
                name,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{what} as agent {name!r} refused: the client certificate names "
                f"{f'agent {named[:80]!r}' if named else 'no agent (CN or SAN URI)'}, and an "
                "agent may only speak as itself",
            )

    @staticmethod
    def _refuse(
        caller: Credentials, what: str, name: str, code: grpc.StatusCode, detail: str
    ) -> NoReturn:
        log.warning("refused %s as %r from %s: %s", what, name, caller.peer, code.name)
        raise Refusal(code, detail)
