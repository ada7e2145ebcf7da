"""What qmix-eval's report, its picture and the runtime's closing lines tell a user.

- report.png: whole-number episode ticks, p50 / p99 / the deadline drawn on the latency
  histogram, and each fault marked where it struck on the episode axis;
- the report defines the sign of the return the faults cost;
- the coordinator's last lines say nothing of a record it did not write nor of a mean of nothing;
- an agent's first contact with the coordinator is not a silence that ended.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from runtime_doubles import FakePolicy

from qmix_edge.runtime.agent import AgentRunner
from qmix_edge.runtime.coordinator import RunSummary, summary_lines
from qmix_edge.runtime.eval import EvalConfig, Fault, build_report, summary_text
from qmix_edge.runtime.eval.picture import draw_report, fault_positions
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.records import EpisodeEnd, EpisodeStart, Record, RunStart, Step

EPISODE_STEPS = 4


def _records(fallback_at: int) -> list[Record]:
    """Two 4-step episodes; one step's reply missed the 100 ms deadline (a fallback at ~100 ms)."""
    out: list[Record] = [RunStart("c", "team", "simulation", resumed_from=0, time=0.0)]
    for t in range(2 * EPISODE_STEPS):
        e, k = divmod(t, EPISODE_STEPS)
        if k == 0:
            out.append(EpisodeStart(episode_id=e + 1, episode_index=e, seed=e))
        out.append(
            Step(
                episode_id=e + 1,
                episode_index=e,
                step=k,
                team_step=t,
                actions=(0, 0),
                exchange_us=100_500 if t == fallback_at else 400 + 10 * t,
                fallback=("agent_0",) if t == fallback_at else (),
                late={},
                t_ms=float(t),
                decision_us={"agent_1": 60} if t == fallback_at else {"agent_0": 50, "agent_1": 60},
            )
        )
        if k == EPISODE_STEPS - 1:
            out.append(
                EpisodeEnd(
                    episode_id=e + 1,
                    episode_index=e,
                    seed=e,
                    steps=EPISODE_STEPS,
                    team_return=-1.0 - e,
                    reason="truncated",
                )
            )
    return out


@pytest.fixture
def report_and_records(tmp_path: Any) -> tuple[dict[str, Any], list[Record]]:
    faults = (
        Fault("kill", "agent_0", at_step=5),  # episode 1, step 1 of 4 -> 1.25
        Fault("drop", "agent_1", fraction=0.5),  # throughout: no one position
        Fault("restart_coordinator", at_step=99),  # never reached
    )
    cfg = EvalConfig(
        artifacts=tmp_path,
        env="two_step",
        episodes=2,
        seed=0,
        report=tmp_path / "r.json",
        faults=faults,
        step_deadline_ms=100,
    )
    records = _records(fallback_at=2)
    report = build_report(cfg, ["agent_0", "agent_1"], records, [-1.0, -1.0], {})
    return report, records


def test_faults_sit_where_they_struck_on_the_episode_axis(
    report_and_records: tuple[dict[str, Any], list[Record]],
) -> None:
    report, records = report_and_records
    assert fault_positions(report["faults"], records) == [(1.25, "kill agent_0")]


def test_picture_marks_percentiles_deadline_faults_and_whole_episodes(
    report_and_records: tuple[dict[str, Any], list[Record]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report, records = report_and_records
    fig = draw_report(report, records)
    try:
        latency, returns = fig.axes
        ms = [r.exchange_us / 1000 for r in records if isinstance(r, Step)]
        vlines = {round(float(line.get_xdata()[0]), 6) for line in latency.get_lines()}
        expected = {round(float(x), 6) for x in (*np.percentile(ms, [50, 99]), 100.0)}
        assert vlines == expected  # p50, p99 and the 100 ms deadline
        labels = latency.get_legend_handles_labels()[1]
        assert any(label.startswith("deadline 100 ms") for label in labels)
        assert "a fallback was applied (1)" in labels  # the bar at the deadline is explained
        fig.canvas.draw()
        ticks = [t for t in returns.get_xticks() if -0.5 <= t <= 1.5]
        assert ticks and all(float(t).is_integer() for t in ticks)
        marked = [
            float(line.get_xdata()[0])
            for line in returns.get_lines()
            if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2
        ]
        assert marked == [1.25]
    finally:
        plt.close(fig)


def test_report_defines_the_sign_of_the_return_the_faults_cost(
    report_and_records: tuple[dict[str, Any], list[Record]],
) -> None:
    report, _ = report_and_records
    assert report["fault_cost"] == pytest.approx(0.5)  # reference -1.0, distributed -1.5
    assert "positive = the faults lowered the team return" in report["fault_cost_means"]
    text = summary_text(report)
    assert "return the faults cost 0.500 (reference mean minus distributed mean" in text
    assert "mean return -1.500  (reference -1.000)" in text
    # episode 0 had a fallback; episode 1 differs with none: that one is a real divergence
    assert "[1] had no fallback nor late reply: a real divergence" in text


def test_coordinator_closing_lines_say_only_what_happened() -> None:
    nothing = RunSummary(finished=False, episodes=(), team_steps=1, counters={})
    assert summary_lines(nothing, None) == [
        "stopped before any episode ended here, 1 team steps in the run, 0 agent decisions"
    ]
    two = RunSummary(
        finished=True,
        episodes=({"return": 1.0, "steps": 4}, {"return": 2.0, "steps": 4}),
        team_steps=8,
        counters={},
    )
    lines = summary_lines(two, "r.jsonl")
    assert lines[0] == (
        "finished after 2 episodes here (mean return 1.5000), 8 team steps in the run, "
        "0 agent decisions"
    )
    assert lines[-1] == "run record appended to r.jsonl"
    assert not any("nan" in line or "no --record" in line for line in summary_lines(nothing))


def test_first_contact_is_not_a_silence_that_ended() -> None:
    runner = AgentRunner(FakePolicy("agent_0"), "127.0.0.1:1")
    runner.on_message(pb.CoordinatorMessage(episode_start=pb.EpisodeStart(episode_id=1)))
    runner.on_message(pb.CoordinatorMessage(episode_start=pb.EpisodeStart(episode_id=2)))
    assert runner.stats.silences_ended == 0
