"""Trust end to end, with real exported artifacts and real processes:

- qmix-eval runs a whole team over mutual TLS with per-agent tokens and keeps exact parity;
- an agent given another agent's certificate is refused (the evaluation fails loudly);
- kill -9 of the coordinator: the record is valid JSONL up to the kill (at most the line in
  flight is torn), the agents hold their fallback and reconnect, and a --resume run completes;
- kill -9 of an agent: no team step is lost from the record (the step in flight gets the
  fallback), every line is valid JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent_cmd
from trust_certs import TOKENS, make_certs

from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.runtime.records import (
    EpisodeEnd,
    Join,
    Leave,
    Record,
    RunEnd,
    Step,
    from_json,
    read_records,
)


def eval_argv(artifacts: Path, tmp_path: Path, certs: dict[str, Path], episodes: int) -> list[str]:
    d = certs["dir"]
    return [
        "--artifacts", str(artifacts), "--episodes", str(episodes), "--seed", "3",
        "--report", str(tmp_path / "report.json"), "--workdir", str(tmp_path / "work"),
        "--step-deadline-ms", "10000", "--timeout-s", "300",
        "--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / "coordinator.pem"),
        "--tls-key", str(d / "coordinator.key"), "--tls-agent-certs", str(certs["agents"]),
        "--tokens", str(certs["tokens"]),
    ]  # fmt: skip


@pytest.mark.slow
def test_eval_over_mutual_tls_with_tokens_keeps_exact_parity(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "pki", {"agent_0": "agent_0", "agent_1": "agent_1"})
    code = eval_main(eval_argv(two_step_artifacts, tmp_path, certs, 4))
    work = tmp_path / "work"
    assert code == 0, (work / "coordinator.log").read_text()[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parity"]["all_equal"] and report["totals"]["fallbacks"] == 0
    for a in TOKENS:  # token files are private to their owner
        assert (work / f"{a}.token").stat().st_mode & 0o077 == 0
    joins = [r for r in read_records(work / "episodes.jsonl") if isinstance(r, Join)]
    assert sorted(r.agent_id for r in joins) == ["agent_0", "agent_1"]


@pytest.mark.slow
def test_eval_with_a_swapped_certificate_fails_loudly(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    # agent_1 is handed a certificate naming agent_0: it must never be admitted as agent_1
    certs = make_certs(tmp_path / "pki", {"agent_0": "agent_0", "agent_1": "agent_0"})
    assert eval_main(eval_argv(two_step_artifacts, tmp_path, certs, 2)) == 1
    log = (tmp_path / "work" / "agent_1.log").read_text()
    assert "join refused (PERMISSION_DENIED)" in log and "names agent 'agent_0'" in log


# ---------------------------------------------------------------------------------- kill -9
def coordinator_cmd(artifacts: Path, tmp_path: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "qmix_edge.runtime.coordinator", "--artifacts", str(artifacts),
        "--episodes", "40", "--step-period-ms", "10", "--port", str(port),
        "--port-file", str(tmp_path / "port"), "--record", str(tmp_path / "run.jsonl"),
        "--step-lane-port-file", str(tmp_path / "lane-port"),
        "--step-deadline-ms", "5000", "--team-wait-s", "60", *extra,
    ]  # fmt: skip


AGENT_FLAGS = ("--backoff-max-s", "0.3", "--give-up-s", "60", "--watchdog-s", "0.5")


def wait_for(pred: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def raw_lines(path: Path) -> tuple[list[Record], str]:
    """(every complete line parsed as JSON and as a record — any bad line fails the test, the
    torn tail)."""
    text = path.read_text()
    *complete, tail = text.split("\n")
    return [from_json(json.loads(line)) for line in complete], tail


@pytest.mark.slow
def test_coordinator_kill_9_loses_at_most_the_line_in_flight_and_resume_completes(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    record = tmp_path / "run.jsonl"
    port_file = tmp_path / "port"
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("c1", "c2", "agent_0", "agent_1")}  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    try:
        c1 = subprocess.Popen(coordinator_cmd(two_step_artifacts, tmp_path, 0), stderr=logs["c1"])
        procs.append(c1)
        wait_for(port_file.exists, "the coordinator's port")
        port = int(port_file.read_text())
        for a in ("agent_0", "agent_1"):
            procs.append(
                subprocess.Popen(
                    agent_cmd(two_step_artifacts, a, port, *AGENT_FLAGS), stderr=logs[a]
                )
            )
        wait_for(lambda: sum(isinstance(r, Step) for r in read_records(record)) >= 15, "15 steps")
        os.kill(c1.pid, signal.SIGKILL)
        c1.wait(10)
        before, tail = raw_lines(record)  # every complete line is valid JSON
        assert tail == "" or not tail.endswith("\n")  # at most one torn line
        steps = [r.team_step for r in before if isinstance(r, Step)]
        assert steps == list(range(len(steps))) and len(steps) >= 15  # no hole up to the kill
        assert not any(isinstance(r, RunEnd) for r in before)
        # the agents notice, hold their fallback, and reconnect to the restarted coordinator
        wait_for(
            lambda: "holding the fallback action" in (tmp_path / "agent_0.log").read_text(),
            "agent_0 to hold its fallback",
        )
        if not tail:  # make the crash-in-a-write case certain: a torn last line
            with open(record, "a") as f:
                f.write('{"type":"step","episode_id":')
        port_file.unlink()
        c2 = subprocess.Popen(
            coordinator_cmd(two_step_artifacts, tmp_path, port, "--resume"), stderr=logs["c2"]
        )
        procs.append(c2)
        assert c2.wait(180) == 0, (tmp_path / "c2.log").read_text()[-2000:]
        assert "torn line" in (tmp_path / "c2.log").read_text()  # cut off before appending
        recs, tail = raw_lines(record)  # the resumed record is valid JSONL throughout
        assert tail == "" and recs[: len(before)] == before
        assert isinstance(recs[-1], RunEnd) and recs[-1].finished is True
        done = {
            r.episode_index for r in recs if isinstance(r, EpisodeEnd) and r.reason != "stopped"
        }
        assert done == set(range(40))
        fresh_joins = [r for r in recs if isinstance(r, Join) and r.rejoin is False]
        assert len(fresh_joins) >= 4  # both agents joined each coordinator instance
        for p in procs[1:3]:
            assert p.wait(60) == 0  # the agents finished with the run
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in logs.values():
            f.close()


@pytest.mark.slow
def test_agent_kill_9_loses_no_team_step(two_step_artifacts: Path, tmp_path: Path) -> None:
    plan = [{"kind": "kill", "agent": "agent_1", "at_step": 9, "restart_after_ms": 200}]
    code = eval_main(
        [
            "--artifacts",
            str(two_step_artifacts),
            "--episodes",
            "12",
            "--seed",
            "0",
            "--report",
            str(tmp_path / "r.json"),
            "--workdir",
            str(tmp_path / "work"),
            "--step-deadline-ms",
            "2000",
            "--faults",
            json.dumps(plan),
        ]
    )
    assert code == 0
    lines, tail = raw_lines(tmp_path / "work" / "episodes.jsonl")
    assert tail == ""  # the coordinator closed its record cleanly
    steps = [r for r in lines if isinstance(r, Step)]
    assert [r.team_step for r in steps] == list(range(24))  # 12 two-step episodes, no hole
    hit = [r for r in steps if "agent_1" in r.fallback]
    assert hit and hit[0].team_step >= 9  # the step in flight got the fallback, not lost
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["agents"]["agent_1"]["rejoins_after_agent_faults"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("dial", ["grpc", "lane-only"])
def test_agent_sigterm_leaves_its_seat_and_the_team_goes_on(
    two_step_artifacts: Path, tmp_path: Path, dial: str
) -> None:
    """SIGTERM to an agent: it says Leave (recorded as left, not as a broken link), exits 1
    promptly, and the coordinator gives its seat the fallback without waiting for deadlines.
    An agent on the step lane alone says it on the lane."""
    record = tmp_path / "run.jsonl"
    port_file = tmp_path / "port"
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("c", "agent_0", "agent_1")}  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cmd = coordinator_cmd(two_step_artifacts, tmp_path, 0)
        cmd[cmd.index("--episodes") + 1] = "0"
        cmd[cmd.index("--team-wait-s") + 1] = "0.2"  # episodes go on without the leaver
        cmd += ["--team-policy", "continue_degraded"]
        coord = subprocess.Popen(cmd, stderr=logs["c"])
        procs.append(coord)
        lane_port_file = tmp_path / "lane-port"
        wait_for(lambda: port_file.exists() and lane_port_file.exists(), "the coordinator's ports")
        port = int(port_file.read_text())
        lane_only = ["--step-lane-address", f"127.0.0.1:{int(lane_port_file.read_text())}"]
        dial_flags = lane_only if dial == "lane-only" else []
        agents = {
            a: subprocess.Popen(
                agent_cmd(two_step_artifacts, a, port, *AGENT_FLAGS, *dial_flags), stderr=logs[a]
            )
            for a in ("agent_0", "agent_1")
        }
        procs += agents.values()
        # 10 steps agent_0 decided itself: it is running (and has its signal handler), not still
        # starting while the coordinator steps without it.
        wait_for(
            lambda: (
                sum(
                    isinstance(r, Step) and "agent_0" not in r.fallback
                    for r in read_records(record)
                )
                >= 10
            ),
            "10 steps decided by agent_0",
        )
        agents["agent_0"].send_signal(signal.SIGTERM)
        assert agents["agent_0"].wait(15) == 1  # stopped on request
        leave = next(
            r for r in read_records(record) if isinstance(r, Leave) and r.agent_id == "agent_0"
        )
        assert leave.reason == "left: agent stopping"
        joins = [r for r in read_records(record) if isinstance(r, Join)]
        assert {r.via for r in joins} == {"lane" if dial == "lane-only" else "grpc"}
        n_then = sum(isinstance(r, Step) for r in read_records(record))
        wait_for(
            lambda: sum(isinstance(r, Step) for r in read_records(record)) >= n_then + 10,
            "10 more steps without agent_0",
        )
        later = [r for r in read_records(record) if isinstance(r, Step)][n_then + 1 :]
        assert all(r.fallback == ("agent_0",) for r in later)
        assert all(r.exchange_us < 5_000_000 for r in later)  # never waited for the deadline
        coord.send_signal(signal.SIGTERM)
        assert coord.wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in logs.values():
            f.close()
