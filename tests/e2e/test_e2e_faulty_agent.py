"""The fault-injecting agent as qmix-eval launches it: a real qmix-agent process (real artifact,
onnxruntime) behind ``python -m qmix_edge.runtime.eval.faulty_agent``, against a coordinator."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import pytest
from e2e_helpers import agent_cmd

from qmix_edge.envs import make_env
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig, TeamSpec
from qmix_edge.runtime.records import Step, read_records


def faulty_cmd(artifacts: Path, agent: str, port: int, *faults: str) -> list[str]:
    """``agent``'s qmix-agent command line, run behind the fault injector with ``faults``."""
    cmd = agent_cmd(artifacts, agent, port, "--give-up-s", "60")
    at = cmd.index("qmix_edge.runtime.agent")
    return [*cmd[:at], "qmix_edge.runtime.eval.faulty_agent", *faults, "--", *cmd[at + 1 :]]


@pytest.mark.slow
def test_a_killed_agent_dies_by_sigkill_at_its_team_step(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    coordinator = Coordinator(
        TeamSpec.from_artifacts(two_step_artifacts),
        CoordinatorConfig(
            episodes=6,
            step_deadline_ms=1000,
            team_wait_s=60,
        ),
        env=make_env("two_step", n_agents=2),
        record_path=record,
    )
    port = coordinator.start("127.0.0.1:0")
    summary: list[object] = []  # the run's summary, once it has ended
    runner = threading.Thread(target=lambda: summary.append(coordinator.run()), daemon=True)
    runner.start()
    agents = {
        "agent_0": subprocess.Popen(agent_cmd(two_step_artifacts, "agent_0", port)),
        "agent_1": subprocess.Popen(
            faulty_cmd(two_step_artifacts, "agent_1", port, "--kill-at-step", "5")
        ),
    }
    try:
        assert agents["agent_1"].wait(120) == -signal.SIGKILL
        coordinator.request_stop()
        runner.join(60)
        assert summary, "the coordinator's run did not stop"
    finally:
        for p in agents.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        coordinator.close(grace_s=0.5)
    steps = [r for r in read_records(record) if isinstance(r, Step)]
    # agent_1 decided every team step before 5 itself; step 5 reached it and it died there.
    assert [r.team_step for r in steps if "agent_1" not in r.fallback] == [0, 1, 2, 3, 4]
    assert all("agent_0" not in r.fallback for r in steps)
