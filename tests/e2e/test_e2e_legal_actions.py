"""No agent can end the team's run, and the run's outcome tells the truth: real exported artifacts,
one OS process per agent and for the coordinator, on masked_choice (random masks) and masked_noop
(the fallback action 0 masked on a schedule).

- kill -9 of an agent mid-episode (and replies dropped): the run finishes; the killed agent's steps
  are substitutions, every one legal and the legal-action rule's (checked by replaying the record);
- a hostile agent replying out-of-range, negative and masked actions: counted invalid, the team
  completes every episode, and the returns equal a one-process reference applying the same rule;
- a coordinator started by hand with a seat never filled exits 3 and names the missing agent;
- README's own fault example, copied out of README.md, runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent_cmd, hostile_agent_cmd, replay_checked

from qmix_edge.runtime.artifact import Manifest
from qmix_edge.runtime.coordinator import EXIT_INCOMPLETE_TEAM
from qmix_edge.runtime.eval import EvalConfig, run_reference
from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.runtime.records import EpisodeEnd, RunEnd, Step, read_records

ROOT = Path(__file__).resolve().parents[2]


def run_eval(artifacts: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    code = eval_main(
        [
            "--artifacts", str(artifacts), "--seed", "7", "--report", str(report),
            "--workdir", str(tmp_path / "work"), "--timeout-s", "600", *extra,
        ]
    )  # fmt: skip
    log = tmp_path / "work" / "coordinator.log"
    assert code == 0, log.read_text()[-3000:] if log.exists() else code
    return dict(json.loads(report.read_text()))


def start_coordinator(artifacts: Path, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "qmix_edge.runtime.coordinator", "--artifacts", str(artifacts),
            "--port", "0", "--port-file", str(tmp_path / "port"), "--step-lane-port", "0",
            "--step-lane-port-file", str(tmp_path / "lane-port"), "--record",
            str(tmp_path / "run.jsonl"), *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def ports(coord: subprocess.Popen[str], tmp_path: Path) -> tuple[int, int]:
    """(gRPC port, step lane port) once the coordinator wrote both files."""
    deadline = time.monotonic() + 180
    files = (tmp_path / "port", tmp_path / "lane-port")
    while not all(f.exists() for f in files):
        assert coord.poll() is None, coord.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the coordinator never reported its ports"
        time.sleep(0.05)
    return int(files[0].read_text()), int(files[1].read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "fault"),
    [
        ("masked_choice", {"kind": "kill", "agent": "agent_0", "at_step": 5}),
        ("masked_noop", {"kind": "kill", "agent": "agent_0", "at_step": 5}),
        ("masked_choice", {"kind": "drop", "agent": "agent_0", "fraction": 0.3}),
    ],
    ids=["masked_choice-kill", "masked_noop-kill", "masked_choice-drop"],
)
def test_a_killed_or_silent_agent_gets_legal_substitutions_and_the_run_finishes(
    masked_artifacts: dict[str, Path], tmp_path: Path, env: str, fault: dict[str, Any]
) -> None:
    report = run_eval(
        masked_artifacts[env],
        tmp_path,
        "--episodes", "3", "--step-deadline-ms", "400", "--faults", json.dumps([fault]),
    )  # fmt: skip
    assert [e["reason"] for e in report["episodes"]] == ["truncated"] * 3  # no env error
    a0 = report["agents"]["agent_0"]
    assert a0["fallbacks"] > 0 and a0["invalid"] == 0
    recs = list(read_records(tmp_path / "work" / "episodes.jsonl"))
    steps = [r for r in recs if isinstance(r, Step)]
    if fault["kind"] == "kill":
        assert report["process"]["agent_starts"]["agent_0"] == 2
        killed = next(r for r in steps if r.team_step == 5)
        assert killed.fallback == ("agent_0",)  # mid-episode 0: its step became a substitution
    assert replay_checked(env, recs, seed0=7) == len(steps) == 24


@pytest.mark.slow
@pytest.mark.parametrize("env", ["masked_choice", "masked_noop"])
def test_a_hostile_agent_is_counted_invalid_and_the_returns_equal_the_rules_reference(
    masked_artifacts: dict[str, Path], tmp_path: Path, env: str
) -> None:
    artifacts = masked_artifacts[env]
    manifest = Manifest.load(artifacts)
    coord = start_coordinator(
        artifacts, tmp_path, "--episodes", "3", "--seed", "7", "--team-wait-s", "300",
        "--step-deadline-ms", "5000", "--lease-steps", "2",  # abort_episode: a dead agent aborts
    )  # fmt: skip
    procs: list[subprocess.Popen[str]] = []
    try:
        port, lane_port = ports(coord, tmp_path)
        sha1 = next(a.sha256 for a in manifest.agents if a.agent_id == "agent_1")
        procs = [
            subprocess.Popen(agent_cmd(artifacts, "agent_0", port), stderr=subprocess.PIPE, text=True),
            subprocess.Popen(
                hostile_agent_cmd(lane_port, "agent_1", sha1),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]  # fmt: skip
        _, err = coord.communicate(timeout=300)
        assert coord.returncode == 0, err[-3000:]
        out, herr = procs[1].communicate(timeout=60)
        assert procs[1].returncode == 0, herr[-3000:]
        assert int(out) == 24  # the hostile double answered every step of the 3 episodes
    finally:
        for p in [coord, *procs]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    recs = list(read_records(tmp_path / "run.jsonl"))
    ends = [r for r in recs if isinstance(r, EpisodeEnd)]
    assert [e.reason for e in ends] == ["truncated"] * 3
    assert isinstance(recs[-1], RunEnd)
    stats = recs[-1].stats
    assert stats["agent_1"]["invalid_actions"] == 24 and stats["agent_1"]["decisions"] == 0
    assert stats["agent_0"]["decisions"] == 24 and stats["agent_1"]["deaths"] == 0
    steps = [r for r in recs if isinstance(r, Step)]
    assert all(r.invalid == ("agent_1",) for r in steps)
    assert replay_checked(env, recs, seed0=7) == 24
    cfg = EvalConfig(artifacts=artifacts, env=None, episodes=3, seed=7, report=tmp_path / "r.json")
    reference = run_reference(cfg, manifest.agent_ids, substituted={"agent_1"})
    assert [e.team_return for e in ends] == reference


@pytest.mark.slow
def test_a_coordinator_by_hand_with_a_seat_never_filled_exits_3_and_names_it(
    masked_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    artifacts = masked_artifacts["masked_noop"]
    coord = start_coordinator(artifacts, tmp_path, "--episodes", "1", "--team-wait-s", "5")
    agent: subprocess.Popen[str] | None = None
    try:
        port, _ = ports(coord, tmp_path)
        agent = subprocess.Popen(
            agent_cmd(artifacts, "agent_0", port), stderr=subprocess.PIPE, text=True
        )
        _, err = coord.communicate(timeout=300)
        agent.communicate(timeout=60)
    finally:
        for p in (coord, agent):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert coord.returncode == EXIT_INCOMPLETE_TEAM, err[-3000:]
    end = list(read_records(tmp_path / "run.jsonl"))[-1]
    assert isinstance(end, RunEnd) and "agent_1" in end.never_joined
    assert end.exit_status == EXIT_INCOMPLETE_TEAM and end.incomplete_team_episodes == 1
    named = [line for line in err.splitlines() if "never joined:" in line]
    assert named and "agent_1" in named[0]


def readme_fault_plan() -> str:
    """The inline JSON after ``--faults`` in README.md's qmix-eval example, as a user would paste
    it (line breaks and indentation included)."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"--faults '(\[.*?\])'", readme, flags=re.DOTALL)
    assert found, "README.md has no qmix-eval --faults '[...]' example"
    return found.group(1)


@pytest.mark.slow
def test_readmes_fault_example_runs(spread_artifacts: Path, tmp_path: Path) -> None:
    plan = readme_fault_plan()
    assert len(plan) > 255  # longer than a file name may be: it must be read as JSON
    kinds = {f["kind"] for f in json.loads(plan)}
    assert kinds == {"kill", "stall", "drop", "restart_coordinator"}
    report = run_eval(
        spread_artifacts,
        tmp_path,
        "--episodes", "20", "--step-deadline-ms", "300", "--lease-steps", "20", "--faults", plan,
    )  # fmt: skip
    assert len(report["faults"]) == 4
    assert all(e["reason"] == "truncated" for e in report["episodes"])  # every episode ran
    assert report["totals"]["coordinator_restarts"] == 1
    assert report["process"]["agent_starts"]["agent_0"] == 2
    assert report["agents"]["agent_2"]["fallbacks"] > 0  # its dropped replies
