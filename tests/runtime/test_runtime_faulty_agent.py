"""The fault-injecting agent of qmix-eval (`qmix_edge.runtime.eval.faulty_agent`): kills, stalls
and drops through the public seam of the agent's step answering, and none of it in qmix-agent."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_doubles import FakePolicy, run_with_a_faulty_agent_1

from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import StepAnswerer
from qmix_edge.runtime.agent import build_parser as agent_parser
from qmix_edge.runtime.agent import main as agent_main
from qmix_edge.runtime.eval.faulty_agent import AgentFaults, FaultyAnswerer
from qmix_edge.runtime.eval.faulty_agent import main as faulty_main
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.records import Step, read_records

HERE = Path(__file__).resolve().parent


def request(team_step: int) -> pb.StepRequest:
    return pb.StepRequest(
        episode_id=1,
        step=team_step,
        team_step=team_step,
        observation=wire.encode(np.array([0, 1, 0], np.float32)),
    )


def test_drops_leave_exactly_the_seeded_fraction_unanswered() -> None:
    a = FaultyAnswerer(FakePolicy("agent_0"), faults=AgentFaults(drop_fraction=0.3, drop_seed=7))
    answered = [a.answer(request(k)) is not None for k in range(200)]
    rng = random.Random(7)
    assert answered == [not rng.random() < 0.3 for _ in range(200)]  # the seed decides each one
    assert a.dropped == answered.count(False) > 0
    assert a.stats.steps == answered.count(True)  # a dropped request is not a step answered


def test_no_fault_answers_every_step_as_the_plain_agent_does() -> None:
    plain = StepAnswerer(FakePolicy("agent_0"))
    faulty_one = FaultyAnswerer(FakePolicy("agent_0"), faults=AgentFaults())
    for k in range(20):
        want, got = plain.answer(request(k)), faulty_one.answer(request(k))
        assert want is not None and got is not None
        assert (got.episode_id, got.step, got.action) == (want.episode_id, want.step, want.action)
    assert faulty_one.dropped == 0 and not faulty_one.stalled


def test_kill_sigkills_the_process_on_the_team_step() -> None:
    """In a process of its own: steps before the kill step are answered, the kill step is not."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from test_runtime_faulty_agent import request\n"
        "from runtime_doubles import FakePolicy\n"
        "from qmix_edge.runtime.eval.faulty_agent import AgentFaults, FaultyAnswerer\n"
        "a = FaultyAnswerer(FakePolicy('agent_0'), faults=AgentFaults(kill_at_step=4))\n"
        "for k in range(10):\n"
        "    print('answering', k, flush=True)\n"
        "    assert a.answer(request(k)) is not None\n"
        "    print('answered', k, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["answered 3", "answering 4"]  # killed on receiving team step 4


def test_a_stall_makes_late_replies_once_then_the_agent_decides_again(make_harness: Any) -> None:
    """A stall longer than the step deadline, once: the stalled reply and those queued behind it
    come late (discarded, the seat gets its fallback for those steps, from the stalled step on);
    the agent is not dead, and every later step is its own decision again."""
    h = make_harness(episodes=10, step_deadline_ms=300, lease_steps=1000, team_wait_s=10)
    summary, stalling = run_with_a_faulty_agent_1(h, AgentFaults(stall_at_step=5, stall_ms=900))
    assert summary.finished
    steps = [r for r in read_records(h.record_path) if isinstance(r, Step)]
    assert len(steps) == 20
    missed = [r.team_step for r in steps if "agent_1" in r.fallback]
    assert missed and missed == list(range(5, 5 + len(missed)))  # from the stalled step on
    assert all("agent_1" not in r.fallback for r in steps[-5:])  # once: it decides again
    c = summary.counters["agent_1"]
    assert c.late_replies == c.fallbacks == len(missed)  # each came late, none went missing
    assert c.joins == 1 and c.deaths == 0 and stalling.stalled  # stalled, not dead
    assert summary.counters["agent_0"].fallbacks == 0


def test_qmix_agent_has_no_fault_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--fault" not in agent_parser().format_help()
    argv = ["--artifacts", "a", "--agent", "agent_0", "--coordinator", "127.0.0.1:1"]
    assert agent_main([*argv, "--fault-kill-at-step", "3"]) == 2  # an unknown flag now
    assert "unrecognized arguments: --fault-kill-at-step" in capsys.readouterr().err


def test_a_plain_agent_never_loads_the_fault_injector() -> None:
    code = (
        "import sys\n"
        "import qmix_edge.runtime.agent\n"
        "sys.exit('loaded' if 'qmix_edge.runtime.eval.faulty_agent' in sys.modules else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr or done.stdout


def test_fault_flags_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert faulty_main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--kill-at-step",
        "--stall-at-step",
        "--stall-ms",
        "--drop-fraction",
        "--drop-seed",
    ):
        assert flag in out
    assert faulty_main(["--drop-fraction", "1.5", "--", "--agent", "a"]) == 2
    assert "drop_fraction must be in [0, 1]; found 1.5" in capsys.readouterr().err
    assert faulty_main(["--kill-at-step", "3"]) == 2  # no "--": where are qmix-agent's flags?
    assert "found no '--'" in capsys.readouterr().err
    # Everything after "--" is qmix-agent's own command line, read by its own parser.
    assert faulty_main(["--kill-at-step", "3", "--", "--agent", "a"]) == 2
    assert "--artifacts" in capsys.readouterr().err
