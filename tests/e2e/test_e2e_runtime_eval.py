"""The whole runtime path with real exported artifacts and real processes (qmix-eval, qmix-agent).

- no faults: every episode's distributed return equals the single-process reference exactly;
- a killed agent: fallbacks counted, it rejoins, the run completes, untouched episodes stay exact;
- a stalled agent: late replies discarded and counted, never applied to another step;
- a coordinator restart: the agents reconnect and the run completes, still exact;
- qmix-agent (field mode, example plug-in) and qmix-coordinator run where torch cannot be imported;
  qmix-agent on the step lane alone (plain text) runs where neither torch, grpc nor ssl can be
  imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import agent_cmd

from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig, TeamSpec
from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.runtime.records import EpisodeEnd, RunEnd, Step, read_records

ROOT = Path(__file__).resolve().parents[2]

# sitecustomize for child processes: torch (and the roots in $QMIX_TEST_ALSO_ABSENT) cannot be
# imported, and a process that has one loaded anyway at exit says so and exits 97.
NO_TORCH = """
import atexit, importlib.abc, os, sys

_ABSENT = ("torch", *filter(None, os.environ.get("QMIX_TEST_ALSO_ABSENT", "").split(",")))

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _ABSENT:
            raise ImportError(f"{name} is absent on this device (test blocker)")
        return None

sys.meta_path.insert(0, _NoTorch())

@atexit.register
def _check():
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(_ABSENT))
    if loaded:
        sys.stderr.write(f"TORCH WAS IMPORTED ({loaded})\\n")
        sys.stderr.flush()
        os._exit(97)
"""


@pytest.fixture
def no_torch_path(tmp_path: Path) -> str:
    d = tmp_path / "no_torch"
    d.mkdir()
    (d / "sitecustomize.py").write_text(NO_TORCH)
    return str(d)


def run_eval(
    artifacts: Path, tmp_path: Path, *extra: str, own_workdir: bool = False
) -> dict[str, Any]:
    """Run qmix-eval; with ``own_workdir`` it makes (and removes) its own temporary work folder."""
    report = tmp_path / "eval" / "nested" / "report.json"  # parents do not exist yet
    workdir = [] if own_workdir else ["--workdir", str(tmp_path / "work")]
    code = eval_main(
        [
            "--artifacts",
            str(artifacts),
            "--episodes",
            extra_value(extra, "--episodes", "4"),
            "--seed",
            "7",
            "--report",
            str(report),
            *workdir,
            "--timeout-s",
            "600",
            *(["--step-deadline-ms", "10000"] if "--step-deadline-ms" not in extra else []),
            *strip(extra, "--episodes"),
        ]
    )
    coordinator_log = tmp_path / "work" / "coordinator.log"
    assert code == 0, coordinator_log.read_text()[-3000:] if coordinator_log.exists() else code
    return dict(json.loads(report.read_text()))


def extra_value(extra: tuple[str, ...], flag: str, default: str) -> str:
    return extra[extra.index(flag) + 1] if flag in extra else default


def strip(extra: tuple[str, ...], flag: str) -> list[str]:
    if flag not in extra:
        return list(extra)
    i = extra.index(flag)
    return list(extra[:i] + extra[i + 2 :])


def step_records(tmp_path: Path) -> list[Step]:
    return [r for r in read_records(tmp_path / "work" / "episodes.jsonl") if isinstance(r, Step)]


def assert_untouched_episodes_exact(report: dict[str, Any]) -> None:
    for e in report["episodes"]:
        if e["fallbacks"] == 0 and e["late_replies"] == 0:
            assert e["return"] == e["reference_return"], e


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "carrier", "via"),
    [
        ((), "lane", "lane"),
        (("--grpc-join",), "lane", "grpc"),
        (("--no-step-lane",), "stream", "grpc"),
    ],
)
def test_distributed_returns_equal_reference_exactly(
    spread_artifacts: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    carrier: str,
    via: str,
) -> None:
    report = run_eval(spread_artifacts, tmp_path, *flags, own_workdir=True)
    assert report["parity"]["all_equal"], report["episodes"]
    agents = ("agent_0", "agent_1", "agent_2")
    assert {a: d["carriers"] for a, d in report["agents"].items()} == {a: [carrier] for a in agents}
    assert {a: d["joined_via"] for a, d in report["agents"].items()} == {a: [via] for a in agents}
    assert [e["seed"] for e in report["episodes"]] == [7, 8, 9, 10]
    assert all(e["return"] == e["reference_return"] for e in report["episodes"])
    assert report["team_steps"] == 40 and report["totals"]["fallbacks"] == 0
    for a in ("agent_0", "agent_1", "agent_2"):
        assert report["agents"][a]["decision_us"]["n"] == 40
    assert {"p50", "p90", "p99"} <= set(report["step_latency_us"])
    assert (tmp_path / "eval" / "nested" / "report.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "parity: every episode equal to the reference" in out
    assert out.strip().splitlines()[-1].startswith("report written to")


@pytest.mark.slow
def test_killed_agent_falls_back_rejoins_and_run_completes(
    spread_artifacts: Path, tmp_path: Path
) -> None:
    plan = [{"kind": "kill", "agent": "agent_0", "at_step": 12, "restart_after_ms": 200}]
    report = run_eval(spread_artifacts, tmp_path, "--episodes", "5", "--faults", json.dumps(plan))
    a0 = report["agents"]["agent_0"]
    assert a0["fallbacks"] > 0 and a0["rejoins_after_agent_faults"] >= 1
    assert report["process"]["agent_starts"]["agent_0"] == 2
    assert all(e["reason"] == "truncated" for e in report["episodes"])  # the run completed
    hit = report["episodes"][1]
    assert hit["fallbacks"] > 0  # team step 12 is in episode 1
    assert_untouched_episodes_exact(report)
    assert report["episodes"][0]["return"] == report["episodes"][0]["reference_return"]
    for r in step_records(tmp_path):
        if "agent_0" in r.fallback:
            assert r.actions[0] == 0  # the manifest's fallback action


@pytest.mark.slow
def test_stalled_agent_late_replies_are_discarded_never_applied(
    spread_artifacts: Path, tmp_path: Path
) -> None:
    plan = [{"kind": "stall", "agent": "agent_1", "at_step": 13, "duration_ms": 3000}]
    report = run_eval(
        spread_artifacts,
        tmp_path,
        "--episodes",
        "4",
        "--faults",
        json.dumps(plan),
        "--step-deadline-ms",
        "500",
        "--lease-steps",
        "50",
    )
    a1 = report["agents"]["agent_1"]
    assert a1["late_replies"] >= 1 and a1["fallbacks"] >= 1
    assert a1["joins"] == 1  # stalled, not dead
    steps = step_records(tmp_path)
    for r in steps:
        # Each step's action for agent_1 is either its own reply to THAT step or its fallback.
        assert ("agent_1" in r.fallback) != ("agent_1" in r.decision_us)
        if "agent_1" in r.fallback:
            assert r.actions[1] == 0
    late_steps = [r.team_step for r in steps if r.late.get("agent_1")]
    assert late_steps and min(late_steps) > 13
    # Episodes the stall did not touch (reset at episode start) are exact.
    assert_untouched_episodes_exact(report)


@pytest.mark.slow
def test_coordinator_restart_agents_reconnect_and_run_stays_exact(
    two_step_artifacts: Path, tmp_path: Path, no_torch_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every child (coordinator and agents) runs with torch made unimportable.
    monkeypatch.setenv("PYTHONPATH", no_torch_path)
    plan = [{"kind": "restart_coordinator", "at_step": 4, "restart_after_ms": 100}]
    report = run_eval(two_step_artifacts, tmp_path, "--episodes", "6", "--faults", json.dumps(plan))
    assert report["totals"]["coordinator_restarts"] == 1
    assert report["process"]["coordinator_starts"] == 2
    for a in ("agent_0", "agent_1"):
        assert report["agents"][a]["joins"] == 2
    # A stopped episode is run again from its seed on resume: nothing differs from the reference.
    assert report["parity"]["all_equal"], report["episodes"]
    logs = "".join(p.read_text() for p in (tmp_path / "work").glob("*.log"))
    assert "TORCH WAS IMPORTED" not in logs


@pytest.mark.slow
@pytest.mark.parametrize("dial", ["grpc", "lane-only"])
def test_qmix_agent_field_mode_runs_without_torch(
    two_step_artifacts: Path, tmp_path: Path, no_torch_path: str, dial: str
) -> None:
    """The example plug-in drives a field team; on the step lane alone, without grpc as well."""
    team = TeamSpec.from_artifacts(two_step_artifacts)
    coordinator = Coordinator(
        team,
        CoordinatorConfig(
            mode="field", episodes=2, episode_limit=5, step_period_ms=10, team_wait_s=120
        ),
        record_path=tmp_path / "field.jsonl",
    )
    port = coordinator.start("127.0.0.1:0")
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(summary=coordinator.run()))
    runner.start()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([no_torch_path, str(ROOT)]),
        "QMIX_EDGE_EXAMPLE_ACTION_LOG": str(tmp_path / "actions.jsonl"),
        # A plain-text lane-only agent needs neither gRPC nor ssl.
        "QMIX_TEST_ALSO_ABSENT": "grpc,grpc_health,ssl,_ssl" if dial == "lane-only" else "",
    }
    lane_only = ["--step-lane-address", f"127.0.0.1:{coordinator.lane_port}"]
    procs = [
        subprocess.Popen(
            agent_cmd(
                two_step_artifacts,
                a,
                port,
                *(lane_only if dial == "lane-only" else []),
                "--sensor",
                "examples.field_plugin:read_sensors",
                "--actuator",
                "examples.field_plugin:actuate",
                "--give-up-s",
                "60",
            ),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in team.agent_ids
    ]
    try:
        outs = [p.communicate(timeout=180)[1] for p in procs]
    finally:
        runner.join(60)
        coordinator.close()
    for p, err in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "TORCH WAS IMPORTED" not in err
        assert "exits 0" in err.strip().splitlines()[-1]
    assert result["summary"].finished
    steps = [r for r in read_records(tmp_path / "field.jsonl") if isinstance(r, Step)]
    assert len(steps) == 10 and all(len(r.reports or ()) == 2 for r in steps)
    acted = [json.loads(x) for x in (tmp_path / "actions.jsonl").read_text().splitlines()]
    assert sum(not a["fallback"] for a in acted) == 20


@pytest.mark.slow
def test_coordinator_sigterm_is_graceful(two_step_artifacts: Path, tmp_path: Path) -> None:
    """SIGTERM: the step in flight finishes, the episode is recorded as stopped, exit 0; the
    agents are told (Goodbye SHUTDOWN), hold their fallback and keep trying to reconnect."""
    import signal
    import time

    record = tmp_path / "run.jsonl"
    port_file = tmp_path / "port"
    coord = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qmix_edge.runtime.coordinator",
            "--artifacts",
            str(two_step_artifacts),
            "--episodes",
            "0",
            "--step-period-ms",
            "20",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--record",
            str(record),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    agents: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 180
        while not port_file.exists():
            assert coord.poll() is None, coord.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = int(port_file.read_text())
        agents = [
            subprocess.Popen(
                agent_cmd(
                    two_step_artifacts, a, port, "--give-up-s", "1.5", "--backoff-max-s", "0.2"
                ),
                stderr=subprocess.PIPE,
                text=True,
            )
            for a in ("agent_0", "agent_1")
        ]
        while sum(isinstance(r, Step) for r in read_records(record)) < 10:
            assert coord.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        coord.send_signal(signal.SIGTERM)
        _, err = coord.communicate(timeout=30)
        assert coord.returncode == 0, err[-2000:]
        assert "run record appended to" in err.strip().splitlines()[-1]
        recs = list(read_records(record))
        assert isinstance(recs[-1], RunEnd) and recs[-1].finished is False
        ends = [r for r in recs if isinstance(r, EpisodeEnd)]
        assert ends and all(e.reason in ("terminated", "stopped") for e in ends)
        for p in agents:
            _, aerr = p.communicate(timeout=60)
            assert p.returncode == 1  # gave up reconnecting: the coordinator stayed away
            assert "GOODBYE_REASON_SHUTDOWN" in aerr
            assert "holding the fallback action" in aerr
    finally:
        for p in [coord, *agents]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
