"""Test certificates of the trust e2e tests (trustme): a team CA, the coordinator's certificate
(127.0.0.1 and SERVER_NAME), agent certificates by CN, and a tokens file. Imported by name."""

from __future__ import annotations

import json
from pathlib import Path

import trustme

TOKENS = {"agent_0": "e2e-token-agent-0-xxxxxxxx", "agent_1": "e2e-token-agent-1-yyyyyyyy"}
SERVER_NAME = "coordinator.team.invalid"
"""A name on the coordinator's certificate for agents that dial another address (--netns)."""


def make_certs(out: Path, cn_of: dict[str, str]) -> dict[str, Path]:
    """A team CA, the coordinator's cert for 127.0.0.1, and ``<agent>.pem/.key`` whose CN is
    ``cn_of[agent]`` (normally the agent id itself)."""
    out.mkdir(parents=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", SERVER_NAME, common_name="coordinator")
    server.cert_chain_pems[0].write_to_path(str(out / "coordinator.pem"))
    server.private_key_pem.write_to_path(str(out / "coordinator.key"))
    agents = out / "agents"
    agents.mkdir()
    for agent, cn in cn_of.items():
        c = ca.issue_cert(f"{cn.replace('_', '-')}.agents.invalid", common_name=cn)
        c.cert_chain_pems[0].write_to_path(str(agents / f"{agent}.pem"))
        c.private_key_pem.write_to_path(str(agents / f"{agent}.key"))
    tokens = out / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    tokens.chmod(0o600)
    return {"dir": out, "agents": agents, "tokens": tokens}
