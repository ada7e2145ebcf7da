"""Mission control as real processes: `qmix-coordinator --mode mission` starts every episode for
a team of `qmix-agent --rate-hz` processes at agreed instants; the world (the field simulator)
starts each episode when mission control announced it. Mission control is killed (SIGKILL) in the
middle of an episode: the agents fly that episode on their own decisions, and a coordinator
restarted with --resume goes on numbering episodes where the record left off and stores each line
of the agents' own records exactly once across both processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from qmix_edge.envs import make_env
from qmix_edge.runtime.artifact import Manifest
from qmix_edge.runtime.eval import EvalConfig, run_reference
from qmix_edge.runtime.eval.field_sim import ADDRESS_ENV, FieldSimulator, MissionStarts
from qmix_edge.runtime.mission_records import AgentRecordLine, FieldLink, MissionEvent
from qmix_edge.runtime.records import RunEnd, RunStart, read_records

EPISODES = 6
KILLED_INDEX = 2  # mission control dies after this episode's first world step


def coordinator(artifacts: Path, record: Path, port: int, port_file: Path, **kw: Any) -> Any:
    cmd = [
        sys.executable, "-m", "qmix_edge.runtime.coordinator",
        "--artifacts", str(artifacts), "--mode", "mission", "--episode-limit", "2",
        "--step-period-ms", "200", "--episodes", str(EPISODES), "--start-lead-ms", "300",
        "--team-wait-s", "60", "--port", str(port), "--port-file", str(port_file),
        "--record", str(record), *kw.get("extra", []),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stderr=open(kw["log"], "w"))  # noqa: SIM115


def port_of(port_file: Path, proc: Any) -> int:
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None:
            raise AssertionError(f"the coordinator exited with {proc.returncode}")
        threading.Event().wait(0.05)
    return int(port_file.read_text())


@pytest.mark.slow
def test_mission_control_starts_the_team_and_its_death_stops_nobody(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    manifest = Manifest.load(two_step_artifacts)
    env = make_env("two_step", n_agents=2)
    fallbacks = [manifest.agent(a).fallback_action for a in manifest.agent_ids]
    sim = FieldSimulator(env, manifest.agent_ids, fallbacks, rate_hz=5, seed=7, episodes=EPISODES)
    record = tmp_path / "mission.jsonl"
    first = coordinator(
        two_step_artifacts, record, 0, tmp_path / "port1", log=tmp_path / "coord1.log"
    )
    port = port_of(tmp_path / "port1", first)
    agents = []
    for agent in manifest.agent_ids:
        cmd = [
            sys.executable, "-m", "qmix_edge.runtime.agent",
            "--artifacts", str(two_step_artifacts), "--agent", agent, "--rate-hz", "5",
            "--coordinator", f"127.0.0.1:{port}", "--episode-limit", "2",
            "--backoff-max-s", "0.5",
            "--sensor", "qmix_edge.runtime.eval.field_sim:sensor",
            "--actuator", "qmix_edge.runtime.eval.field_sim:actuator",
            "--record", str(tmp_path / f"{agent}.jsonl"),
        ]  # fmt: skip
        env_vars = {**os.environ, ADDRESS_ENV: f"{sim.address[0]}:{sim.address[1]}"}
        agents.append(
            subprocess.Popen(cmd, env=env_vars, stderr=open(tmp_path / f"{agent}.log", "w"))  # noqa: SIM115
        )
    episodes: list[Any] = []
    world = threading.Thread(target=lambda: episodes.extend(sim.run(MissionStarts(record))))
    world.start()
    second = None
    try:
        assert sim.wait_for_step(KILLED_INDEX, 1, 120), "the world never reached the kill point"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        second = coordinator(
            two_step_artifacts,
            record,
            port,
            tmp_path / "port2",
            log=tmp_path / "coord2.log",
            extra=["--resume"],
        )
        assert second.wait(120) == 0, (tmp_path / "coord2.log").read_text()
        world.join(60)
        assert not world.is_alive()
    finally:
        sim.stop_event.set()
        for p in [*agents, *([second] if second else [])]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in agents]
        sim.close()
    logs = {a: (tmp_path / f"{a}.log").read_text() for a in manifest.agent_ids}
    assert codes == [0, 0], logs
    assert len(episodes) == EPISODES

    # the world followed mission control's schedule: one start per episode index, across both
    # processes, and the restarted one went on from where the record left off
    recs = list(read_records(record))
    starts = [r.episode_index for r in recs if isinstance(r, MissionEvent) and r.kind == "start"]
    assert starts == list(range(EPISODES))
    assert [r.resumed_from for r in recs if isinstance(r, RunStart)] == [0, KILLED_INDEX + 1]
    assert [r.finished for r in recs if isinstance(r, RunEnd)] == [True]
    ups = [r.agent_id for r in recs if isinstance(r, FieldLink) and r.up]
    assert sorted(set(ups)) == sorted(manifest.agent_ids) and len(ups) >= 4  # both processes

    # the agents decided every step of the episode mission control died in
    reference = run_reference(
        EvalConfig(
            artifacts=two_step_artifacts, report=tmp_path / "r.json", episodes=EPISODES, seed=7
        ),
        manifest.agent_ids,
    )
    killed_id = KILLED_INDEX + 1
    for agent in manifest.agent_ids:
        local = (tmp_path / f"{agent}.jsonl").read_text().splitlines()
        ticks = [json.loads(x) for x in local]
        decided = [t for t in ticks if t["episode"] == killed_id and t["why"] == "decided"]
        assert len(decided) >= 2, (agent, ticks)
        # each line of the agent's own record stored once, in order, across both processes
        stored = [r for r in recs if isinstance(r, AgentRecordLine) and r.agent_id == agent]
        assert [r.seq for r in stored] == list(range(len(stored)))
        assert [r.line for r in stored] == local[: len(stored)]
        assert len(stored) > 0
    own = [i for i, e in enumerate(episodes) if not any(e.substituted.values())]
    assert own, f"no episode was played by the agents alone: {episodes}"
    for i in own:
        assert episodes[i].ret == reference[i]
