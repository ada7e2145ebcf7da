"""Helpers of the end-to-end tests (a uniquely named module: several test folders have a conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

from qmix_edge.runtime.records import Record, Step


def agent_cmd(artifacts: Path, agent: str, port: int, *extra: str) -> list[str]:
    """The `qmix-agent` command line for one agent dialling a coordinator on loopback (its gRPC
    ``port``; with ``--step-lane-address`` in ``extra``, that lane alone)."""
    dial = [] if "--step-lane-address" in extra else ["--coordinator", f"127.0.0.1:{port}"]
    return [
        sys.executable, "-m", "qmix_edge.runtime.agent", "--artifacts", str(artifacts),
        "--agent", agent, *dial, *extra,
    ]  # fmt: skip


def replay_checked(env_id: str, records: list[Record], seed0: int, fallback: int = 0) -> int:
    """Replay a run record's applied actions in a fresh ``env_id`` env (episode i reset with
    ``seed0 + i``): every action must be allowed by its step's mask, and every substituted one
    (``fallback`` in the record) the legal-action rule's. Returns the steps replayed."""
    import numpy as np

    from qmix_edge.envs import make_env
    from qmix_edge.runtime.legal import substitute

    env = make_env(env_id, n_agents=2)
    ids = [a.agent_id for a in env.spec.agents]
    steps = [r for r in records if isinstance(r, Step) and r.applied]
    n = 0
    for index in sorted({r.episode_index for r in steps}):
        ts = env.reset(seed=seed0 + index)
        for r in (r for r in steps if r.episode_index == index):
            for i, a in enumerate(ids):
                n_actions = env.spec.agents[i].n_actions
                mask = ts.avail[i, :n_actions]
                assert mask[r.actions[i]], (r, mask)
                if a in r.fallback:
                    assert r.actions[i] == substitute(fallback, n_actions, mask), (r, mask)
            ts = env.step(np.asarray(r.actions, dtype=np.int64)).next
            n += 1
    env.close()
    return n


def hostile_agent_cmd(lane_port: int, agent: str, sha256: str) -> list[str]:
    """A process running the hostile protocol double of tests/runtime/runtime_doubles.py as
    ``agent`` on a coordinator's step lane: out-of-range, negative and masked replies only."""
    doubles = Path(__file__).resolve().parents[1] / "runtime"
    script = (
        f"import sys; sys.path.insert(0, {str(doubles)!r})\n"
        "from runtime_doubles import ScriptedLaneAgent\n"
        f"a = ScriptedLaneAgent({lane_port}, {agent!r}, {sha256!r})\n"
        "a.wait(600)\n"
        "print(len(a.steps))\n"
    )
    return [sys.executable, "-c", script]
