"""`qmix-eval --field` end to end, as real processes: mission control (`qmix-coordinator --mode
mission`) starts every episode for a team of `qmix-agent --rate-hz` processes at agreed instants;
the world (the field simulator) starts each episode when mission control announced it. Three
scenarios: nothing in the way; a delaying, lossy link; mission control killed (SIGKILL) one step
into the middle episode and restarted with --resume, after which the agents flew that episode on
their own decisions, episodes went on numbering where the record left off, and every line of each
agent's own record was stored exactly once across both mission control processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmix_edge.runtime.eval import EvalConfig, run_reference
from qmix_edge.runtime.eval.cli import main
from qmix_edge.runtime.mission_records import AgentRecordLine, FieldLink, MissionEvent
from qmix_edge.runtime.records import RunEnd, RunStart, read_records

EPISODES = 4
AGENTS = ("agent_0", "agent_1")


@pytest.mark.slow
def test_qmix_eval_field_flies_the_team_through_a_lossy_link_and_a_dead_mission_control(
    two_step_artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path, work = tmp_path / "field.json", tmp_path / "work"
    code = main(
        [
            "--artifacts", str(two_step_artifacts), "--field", "--episodes", str(EPISODES),
            "--seed", "7", "--report", str(report_path), "--workdir", str(work),
            "--field-loss", "0.2", "--field-restart-after-ms", "500",
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    report = json.loads(report_path.read_text())
    assert report_path.with_suffix(".png").stat().st_size > 0
    reference = run_reference(
        EvalConfig(
            artifacts=two_step_artifacts, report=tmp_path / "r.json", episodes=EPISODES, seed=7
        ),
        AGENTS,
    )
    assert report["reference"]["returns"] == reference
    scenarios = report["scenarios"]
    assert list(scenarios) == ["own_clocks", "link", "coordinator_killed"]
    for s in scenarios.values():
        assert len(s["returns"]) == EPISODES and s["mission_finished"]
        # an episode the agents played alone (no action substituted) returns what lockstep does
        for ret, sub, ref in zip(s["returns"], s["substituted"], reference, strict=True):
            if not any(sub.values()):
                assert ret == ref
    assert scenarios["link"]["link"]["dropped"] > 0

    killed = work / "coordinator_killed"
    recs = list(read_records(killed / "mission.jsonl"))
    starts = [r.episode_index for r in recs if isinstance(r, MissionEvent) and r.kind == "start"]
    assert starts == list(range(EPISODES))  # one start per episode across both processes
    middle = EPISODES // 2
    assert [r.resumed_from for r in recs if isinstance(r, RunStart)] == [0, middle + 1]
    assert [r.finished for r in recs if isinstance(r, RunEnd)] == [True]
    ups = [r.agent_id for r in recs if isinstance(r, FieldLink) and r.up]
    assert sorted(set(ups)) == list(AGENTS) and len(ups) >= 4  # linked to both processes
    for agent in AGENTS:
        local = (killed / f"{agent}.ticks.jsonl").read_text().splitlines()
        ticks = [json.loads(x) for x in local]
        flown = [t for t in ticks if t["episode"] == middle + 1 and t["why"] == "decided"]
        assert len(flown) >= 2, ticks  # both steps of the episode mission control died in
        stored = [r for r in recs if isinstance(r, AgentRecordLine) and r.agent_id == agent]
        assert len(stored) > 0
        assert [r.seq for r in stored] == list(range(len(stored)))  # none lost, none twice
        assert [r.line for r in stored] == local[: len(stored)]
