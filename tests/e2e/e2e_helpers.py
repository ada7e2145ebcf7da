"""Helpers of the end-to-end tests (a uniquely named module: several test folders have a conftest)."""

from __future__ import annotations

import sys
from pathlib import Path


def agent_cmd(artifacts: Path, agent: str, port: int, *extra: str) -> list[str]:
    """The `qmix-agent` command line for one agent dialling a coordinator on loopback (its gRPC
    ``port``; with ``--step-lane-address`` in ``extra``, that lane alone)."""
    dial = [] if "--step-lane-address" in extra else ["--coordinator", f"127.0.0.1:{port}"]
    return [
        sys.executable, "-m", "qmix_edge.runtime.agent", "--artifacts", str(artifacts),
        "--agent", agent, *dial, *extra,
    ]  # fmt: skip
