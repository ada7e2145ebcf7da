"""qmix-eval's child command lines and its exit codes.

- the coordinator's and the agents' command lines read back, through their own commands'
  declarations, as what the evaluation asked for, timeouts included (none is hard-coded);
- an agent with a fault runs through the eval-only faulty agent (fault flags, then ``--`` and the
  plain qmix-agent flags); a killed agent's restart runs clean, a dropping one keeps dropping;
- trust material reaches each child, a token through a file only its owner can read;
- a configuration error exits 2 and a failed run 1, each with one line; a bug is not turned into
  either: it propagates with its traceback.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qmix_edge.common import settings
from qmix_edge.runtime.agent.config import AgentConfig
from qmix_edge.runtime.coordinator.config import CoordinatorConfig
from qmix_edge.runtime.errors import RuntimeFailure
from qmix_edge.runtime.eval import EvalConfig, Fault, cli, main
from qmix_edge.runtime.eval.launcher import (
    FAULTY_AGENT,
    agent_command,
    agent_config,
    coordinator_command,
    coordinator_config,
    fault_flags,
)

AGENTS = ("agent_0", "agent_1")


def read_back(cls: type, argv: list[str]) -> Any:
    """What the command of ``cls`` makes of ``argv`` (its parser is built from ``cls``)."""
    return settings.parse(cls, settings.build_parser(cls, "child"), argv)[0]


def eval_config(tmp_path: Path, **kw: Any) -> EvalConfig:
    return EvalConfig(artifacts=tmp_path / "art", report=tmp_path / "r.json", **kw)


def test_the_coordinator_is_told_what_the_evaluation_asked(tmp_path: Path) -> None:
    cfg = eval_config(
        tmp_path,
        env="two_step",
        episodes=6,
        seed=7,
        episode_limit=3,
        step_deadline_ms=900,
        lease_steps=4,
        team_wait_s=12.5,
    )
    want = coordinator_config(
        cfg, tmp_path, port=4321, lane_port=4322, stop_after=5, resume=True, in_netns=False
    )
    cmd = coordinator_command(want)
    assert cmd[:3] == [sys.executable, "-m", "qmix_edge.runtime.coordinator"]
    got = read_back(CoordinatorConfig, cmd[3:])
    assert got == want
    assert (got.team_wait_s, got.step_deadline_ms, got.lease_steps) == (12.5, 900, 4)
    assert (got.port, got.step_lane_port, got.stop_after_steps, got.resume) == (4321, 4322, 5, True)
    assert got.team_policy == "continue_degraded" and got.host == "127.0.0.1"
    assert got.record == str(tmp_path / "episodes.jsonl")


def test_agents_get_the_evaluations_reconnect_timeouts(tmp_path: Path) -> None:
    cfg = eval_config(tmp_path, agent_backoff_max_s=0.25, agent_give_up_s=42.0)
    lane = agent_config(cfg, "agent_1", "127.0.0.1:9", None, in_netns=False)
    cmd = agent_command(lane)
    assert cmd[:3] == [sys.executable, "-m", "qmix_edge.runtime.agent"]
    got = read_back(AgentConfig, cmd[3:])
    assert got == lane
    assert (got.backoff_max_s, got.give_up_s) == (0.25, 42.0)
    assert (got.step_lane_address, got.coordinator) == ("127.0.0.1:9", None)  # the lane alone
    grpc = agent_config(
        eval_config(tmp_path, grpc_join=True), "agent_1", "h:8", None, in_netns=False
    )
    assert read_back(AgentConfig, agent_command(grpc)[3:]).coordinator == "h:8"


def test_an_agent_with_a_fault_runs_through_the_faulty_agent(tmp_path: Path) -> None:
    faults = (
        Fault("kill", "agent_0", at_step=5),
        Fault("stall", "agent_0", at_step=9, duration_ms=600),
        Fault("drop", "agent_0", fraction=0.25, seed=3),
        Fault("kill", "agent_1", at_step=2),
    )
    agent = agent_config(eval_config(tmp_path), "agent_0", "127.0.0.1:9", None, in_netns=False)
    first = fault_flags(faults, "agent_0", first_start=True)
    assert first == [
        "--kill-at-step", "5",
        "--stall-at-step", "9", "--stall-ms", "600",
        "--drop-fraction", "0.25", "--drop-seed", "3",
    ]  # fmt: skip
    cmd = agent_command(agent, first)
    assert cmd[:3] == [sys.executable, "-m", FAULTY_AGENT]
    split = cmd.index("--")
    assert cmd[3:split] == first
    assert read_back(AgentConfig, cmd[split + 1 :]) == agent  # the plain qmix-agent flags
    # The restarted process: the kill and the stall were the first one's; the drop stays.
    assert fault_flags(faults, "agent_0", first_start=False) == [
        "--drop-fraction", "0.25", "--drop-seed", "3",
    ]  # fmt: skip
    assert fault_flags(faults, "agent_1", first_start=False) == []
    plain = agent_command(agent, fault_flags(faults, "agent_1", first_start=False))
    assert plain[:3] == [sys.executable, "-m", "qmix_edge.runtime.agent"]


def test_trust_material_reaches_each_child(tmp_path: Path) -> None:
    pem = {n: tmp_path / n for n in ("ca.pem", "server.pem", "server.key")}
    cfg = eval_config(
        tmp_path,
        tls_ca=pem["ca.pem"],
        tls_cert=pem["server.pem"],
        tls_key=pem["server.key"],
        tls_agent_certs=tmp_path / "agents",
        tls_server_name="coordinator.test",
        tokens=tmp_path / "tokens.json",
    )
    coord = read_back(
        CoordinatorConfig,
        coordinator_command(
            coordinator_config(
                cfg, tmp_path, port=1, lane_port=2, stop_after=None, resume=False, in_netns=True
            )
        )[3:],
    )
    assert (coord.tls_cert, coord.tls_key) == (str(pem["server.pem"]), str(pem["server.key"]))
    assert coord.tls_client_ca == str(pem["ca.pem"]) and coord.tokens == str(cfg.tokens)
    assert coord.host == "0.0.0.0" and coord.allow_insecure is False  # TLS in the namespaces
    token_file = tmp_path / "agent_1.token"
    agent = read_back(
        AgentConfig,
        agent_command(agent_config(cfg, "agent_1", "10.0.0.1:1", token_file, in_netns=True))[3:],
    )
    assert agent.tls_cert == str(tmp_path / "agents" / "agent_1.pem")
    assert agent.tls_key == str(tmp_path / "agents" / "agent_1.key")
    assert (agent.tls_ca, agent.tls_server_name) == (str(pem["ca.pem"]), "coordinator.test")
    assert agent.token_file == str(token_file) and agent.token is None  # never on the line


def eval_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["--artifacts", str(tmp_path), "--report", str(tmp_path / "r.json"), *extra]


def test_a_configuration_error_exits_2_with_one_line(tmp_path: Path) -> None:
    """What the user reads: one line that names the cause, no traceback."""
    argv = eval_argv(tmp_path / "no_such_artifacts")
    r = subprocess.run(
        [sys.executable, "-m", "qmix_edge.runtime.eval", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_artifacts does not exist" in lines[0], r.stderr


def test_a_failed_run_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(cfg: EvalConfig, workdir: Path | None = None) -> dict[str, Any]:
        raise RuntimeFailure("agent agent_0 exited with 2: it could not start")

    monkeypatch.setattr(cli, "check_config", lambda cfg: None)
    monkeypatch.setattr(cli, "evaluate", fails)
    with caplog.at_level(logging.ERROR):
        assert main(eval_argv(tmp_path)) == 1
    assert [r.exc_info for r in caplog.records] == [None]  # one message, no traceback


@pytest.mark.parametrize("where", ["check_config", "evaluate"])
def test_a_bug_is_not_a_usage_error_nor_a_run_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        return {}["missing"]  # KeyError: a bug, not a failure the harness expects

    monkeypatch.setattr(cli, "check_config", lambda cfg: None)
    monkeypatch.setattr(cli, where, bug)
    with pytest.raises(KeyError, match="missing"):
        main(eval_argv(tmp_path))
