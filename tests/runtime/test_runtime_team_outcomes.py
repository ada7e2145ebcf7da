"""No agent's input can end the team's run, and the run's outcome tells the truth (in-process
coordinator on port 0, agents as protocol doubles on the step lane, the masked_noop env whose
fallback action 0 is masked at some steps)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_doubles import SHA, Harness, ScriptedLaneAgent, highest_allowed

from qmix_edge.envs import make_env
from qmix_edge.envs.base import TeamEnv
from qmix_edge.runtime.coordinator import (
    EXIT_FAILURE,
    EXIT_INCOMPLETE_TEAM,
    EXIT_OK,
    AgentSlot,
    Coordinator,
    CoordinatorConfig,
    TeamSpec,
    summary_lines,
)
from qmix_edge.runtime.legal import substitute
from qmix_edge.runtime.records import EpisodeEnd, Record, RunEnd, Step, read_records

N_ACTIONS, OBS_DIM, FALLBACK = 4, 5, 0  # masked_noop with 4 actions; fallback 0 = the no-op


def masked_team() -> TeamSpec:
    return TeamSpec(
        team_id="run-masked",
        agents=tuple(
            AgentSlot(a, OBS_DIM, N_ACTIONS, FALLBACK, frozenset([SHA[a]]))
            for a in ("agent_0", "agent_1")
        ),
        env_id="masked_noop",
    )


class AuditedEnv(TeamEnv):
    """masked_noop for 2 agents that keeps every joint action it was given with the masks of its
    step (``applied``), and raises at step 1 of the episodes reset with a seed in ``fail_seeds``."""

    def __init__(self, fail_seeds: frozenset[int] = frozenset()) -> None:
        self.inner = make_env("masked_noop", n_agents=2)
        self.spec = self.inner.spec
        self.fail_seeds = fail_seeds
        self.seed: int | None = None
        self.t = 0
        self.current: Any = None
        self.applied: list[tuple[np.ndarray, np.ndarray]] = []  # (actions, masks) per step

    def reset(self, seed: int | None = None) -> Any:
        self.seed, self.t = seed, 0
        self.current = self.inner.reset(seed=seed)
        return self.current

    def step(self, actions: np.ndarray) -> Any:
        self.t += 1
        if self.seed in self.fail_seeds and self.t == 2:
            raise RuntimeError(f"physics diverged (seed {self.seed})")
        self.applied.append((np.array(actions), np.array(self.current.avail)))
        result = self.inner.step(actions)
        self.current = result.next
        return result

    def substitutions_follow_the_rule(self, recs: list[Record]) -> int:
        """Every applied action is allowed, and every substituted one (the record's ``fallback``)
        is the legal-action rule's; returns the steps checked."""
        steps = [r for r in recs if isinstance(r, Step) and r.applied]
        assert len(steps) == len(self.applied)
        for r, (actions, masks) in zip(steps, self.applied, strict=True):
            assert list(r.actions) == actions.tolist()
            for i, a in enumerate(("agent_0", "agent_1")):
                assert masks[i, actions[i]], (r, masks)
                if a in r.fallback:
                    assert actions[i] == substitute(FALLBACK, N_ACTIONS, masks[i])
        return len(steps)


class RecordedHarness(Harness):
    """A `Harness` that knows where its coordinator's run record is."""

    def __init__(self, coordinator: Coordinator, record_path: Path) -> None:
        super().__init__(coordinator)
        self.record_path = record_path


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(env: Any = None, **config: Any) -> RecordedHarness:
        cfg = CoordinatorConfig(**{"team_wait_s": 10.0, "step_deadline_ms": 5000, **config})
        env = env if env is not None else AuditedEnv()
        path = tmp_path / f"r{len(made)}.jsonl"
        h = RecordedHarness(Coordinator(masked_team(), cfg, env=env, record_path=path), path)
        made.append(h)
        return h

    yield make
    for h in made:
        h.coordinator.close(grace_s=0.5)


def records(h: RecordedHarness) -> list[Record]:
    return list(read_records(h.record_path))


def honest(h: Harness, *agent_ids: str) -> list[ScriptedLaneAgent]:
    """Honest agent doubles (the highest allowed action), joined and attached on return."""
    return [
        ScriptedLaneAgent(h.coordinator.lane_port, a, SHA[a], highest_allowed) for a in agent_ids
    ]


def test_hostile_agent_is_counted_invalid_and_the_team_completes_every_episode(
    coordinator: Any,
) -> None:
    h = coordinator(episodes=3, lease_steps=2)  # abort_episode: a dead agent would abort
    h.run_in_thread()
    (good,) = honest(h, "agent_0")
    hostile = ScriptedLaneAgent(h.coordinator.lane_port, "agent_1", SHA["agent_1"])
    summary = h.wait()
    hostile.wait()
    good.close()
    hostile.close()
    assert summary.finished and [e["reason"] for e in summary.episodes] == ["truncated"] * 3
    sent = hostile.steps
    assert len(sent) == 24 and {a for *_, a in sent} >= {N_ACTIONS + 93, -1}
    assert any(0 <= a < N_ACTIONS and not m[a] for *_, m, a in sent)  # masked replies too
    c = summary.counters["agent_1"]
    assert (c.invalid_actions, c.fallbacks, c.decisions, c.deaths) == (24, 24, 0, 0)
    assert summary.counters["agent_0"].decisions == 24
    recs = records(h)
    steps = [r for r in recs if isinstance(r, Step)]
    assert all(r.invalid == ("agent_1",) and r.fallback == ("agent_1",) for r in steps)
    for r, (_, _, mask, _) in zip(steps, sent, strict=True):
        assert r.actions[1] == substitute(FALLBACK, N_ACTIONS, mask)
    # the fallback 0 was masked at some of those steps, so the rule had to go past it
    assert any(not mask[FALLBACK] for _, _, mask, _ in sent)
    assert h.coordinator.env.substitutions_follow_the_rule(recs) == 24
    assert hostile.goodbye is not None and hostile.goodbye.detail == "run finished"
    assert summary.exit_status == EXIT_OK
    assert any("agent_1 24" in line for line in summary_lines(summary))


def test_a_seat_never_filled_is_named_and_not_a_success(coordinator: Any) -> None:
    h = coordinator(episodes=2, team_wait_s=0.2, lease_steps=3, team_policy="continue_degraded")
    (agent,) = honest(h, "agent_0")
    assert (agent.attached.agents_attached, agent.attached.n_agents) == (1, 2)
    h.run_in_thread()
    summary = h.wait()
    agent.close()
    assert summary.never_joined == ("agent_1",)
    assert summary.exit_status == EXIT_INCOMPLETE_TEAM
    assert summary.incomplete_team_episodes == 2
    assert all(e["absent"] == ["agent_1"] for e in summary.episodes)
    recs = records(h)
    assert h.coordinator.env.substitutions_follow_the_rule(recs) == 16
    end = recs[-1]
    assert isinstance(end, RunEnd) and end.never_joined == ("agent_1",)
    assert end.exit_status == EXIT_INCOMPLETE_TEAM and end.incomplete_team_episodes == 2
    assert any(line.startswith("never joined: agent_1 ") for line in summary_lines(summary))


def test_nobody_joined_is_not_a_success(coordinator: Any) -> None:
    h = coordinator(episodes=1, team_wait_s=0.05, step_deadline_ms=1, lease_steps=100)
    h.run_in_thread()
    summary = h.wait()
    assert summary.never_joined == ("agent_0", "agent_1")
    assert summary.decisions == 0 and summary.exit_status == EXIT_INCOMPLETE_TEAM
    assert h.coordinator.env.substitutions_follow_the_rule(records(h)) == 8


def test_an_env_error_ends_its_episode_and_the_run_goes_on(coordinator: Any) -> None:
    h = coordinator(env=AuditedEnv(frozenset({1})), episodes=3, seed=0)
    h.run_in_thread()
    agents = honest(h, "agent_0", "agent_1")
    summary = h.wait()
    for a in agents:
        a.close()
    reasons = [e["reason"] for e in summary.episodes]
    assert reasons == ["truncated", "env_error", "truncated"]
    failed = summary.episodes[1]
    assert failed["error"] == "RuntimeError: physics diverged (seed 1)" and failed["steps"] == 2
    assert summary.finished and summary.failure is None and summary.exit_status == EXIT_OK
    ends = [r for r in records(h) if isinstance(r, EpisodeEnd)]
    assert ends[1].reason == "env_error" and "physics diverged" in (ends[1].error or "")


def test_three_env_errors_in_a_row_fail_the_run_with_the_message(coordinator: Any) -> None:
    h = coordinator(env=AuditedEnv(frozenset(range(10))), episodes=6)
    h.run_in_thread()
    agents = honest(h, "agent_0", "agent_1")
    summary = h.wait()
    for a in agents:
        a.wait()  # told the run is over (RUN_FINISHED): they may exit
        a.close()
    assert [e["reason"] for e in summary.episodes] == ["env_error"] * 3
    assert not summary.finished and summary.exit_status == EXIT_FAILURE
    assert summary.failure is not None and "physics diverged (seed 2)" in summary.failure
    end = records(h)[-1]
    assert isinstance(end, RunEnd) and end.exit_status == EXIT_FAILURE
    assert "3 consecutive episodes" in (end.failure or "")
