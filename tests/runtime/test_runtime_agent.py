"""qmix-agent's runner in-process: bad inputs answered with the fallback, refusals, backoff, the
watchdog, and field mode with the example plug-in."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_doubles import FakePolicy

from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import AgentRunner, Backoff, main
from qmix_edge.runtime.errors import RuntimeFailure
from qmix_edge.runtime.field import FieldStep, load_callable
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.records import Step, read_records

ROOT = Path(__file__).resolve().parents[2]


def step_request(obs: np.ndarray, mask: np.ndarray | None = None) -> pb.StepRequest:
    req = pb.StepRequest(episode_id=3, step=1, observation=wire.encode(obs))
    if mask is not None:
        req.action_mask.CopyFrom(wire.encode(mask))
    return req


def test_decides_from_its_own_observation_and_mask() -> None:
    policy = FakePolicy("agent_0")
    runner = AgentRunner(policy, "127.0.0.1:1")
    reply = runner.answerer.decide(
        step_request(np.array([0, 0, 1], np.float32), np.array([True, True]))
    )
    assert (reply.episode_id, reply.step, reply.action, reply.is_fallback) == (3, 1, 0, False)
    reply = runner.answerer.decide(
        step_request(np.array([0, 1, 0], np.float32), np.array([True, False]))
    )
    assert reply.action == 0  # action 1 is masked out


def test_a_step_reply_of_zero_fields_is_still_a_step_reply() -> None:
    runner = AgentRunner(FakePolicy("agent_0"), "127.0.0.1:1")
    req = step_request(np.array([1, 0, 0], np.float32))  # argmax 0: action 0
    req.episode_id = req.step = 0
    out = runner.on_message(pb.CoordinatorMessage(step_request=req))
    assert isinstance(out, pb.AgentMessage) and out.WhichOneof("kind") == "step_reply"
    assert (out.step_reply.episode_id, out.step_reply.step, out.step_reply.action) == (0, 0, 0)


@pytest.mark.parametrize(
    "obs",
    [np.array([np.nan, 0, 0], np.float32), np.zeros(5, np.float32)],
    ids=["nan", "wrong-size"],
)
def test_bad_observation_is_answered_with_the_fallback(obs: np.ndarray) -> None:
    policy = FakePolicy("agent_0", fallback_action=1)
    runner = AgentRunner(policy, "127.0.0.1:1")
    reply = runner.answerer.decide(step_request(obs))
    assert reply.action == 1 and reply.is_fallback
    assert runner.stats.bad_requests == 1 and policy.seen == []


def test_a_failed_decision_under_a_mask_forbidding_the_fallback_sends_the_lowest_allowed() -> None:
    policy = FakePolicy("agent_0", n_actions=4, fallback_action=1)
    runner = AgentRunner(policy, "127.0.0.1:1")
    req = step_request(np.array([np.nan, 0, 0], np.float32), np.array([False, False, True, True]))
    out = runner.on_message(pb.CoordinatorMessage(step_request=req))
    assert isinstance(out, pb.AgentMessage)
    assert (out.step_reply.action, out.step_reply.is_fallback) == (2, True)
    assert policy.seen == []


def test_the_held_action_follows_the_legal_action_rule_under_the_last_mask() -> None:
    policy = FakePolicy("agent_0", n_actions=4, fallback_action=1)
    runner = AgentRunner(policy, "127.0.0.1:1")
    assert runner.answerer.held_action() == 1  # no mask seen yet: the fallback
    req = step_request(np.array([0, 0, 1], np.float32), np.array([False, False, False, True]))
    runner.on_message(pb.CoordinatorMessage(step_request=req))
    assert runner.answerer.held_action() == 3  # the fallback is masked: the lowest allowed action
    req = step_request(np.array([0, 0, 1], np.float32), np.array([True, True, False, False]))
    runner.on_message(pb.CoordinatorMessage(step_request=req))
    assert runner.answerer.held_action() == 1


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0)
    rng = random.Random(0)
    delays = [b.delay(n, rng) for n in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    assert len({round(d, 6) for d in delays[4:]}) > 1  # jittered, not in lock step


def test_refused_agent_exits_with_config_error(make_harness: Any) -> None:
    h = make_harness()
    runner = AgentRunner(FakePolicy("agent_0", artifact_sha256="e" * 64), h.target)
    assert runner.run() == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watchdog_actuates_the_fallback_when_no_coordinator_answers() -> None:
    calls: list[tuple[FieldStep, int]] = []
    runner = AgentRunner(
        FakePolicy("agent_0", fallback_action=1),
        f"127.0.0.1:{_free_port()}",
        sensor=lambda ctx: np.zeros(ctx.obs_dim, np.float32),
        actuator=lambda ctx, a: calls.append((ctx, a)),
        watchdog_s=0.1,
        give_up_s=0.6,
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    assert runner.run() == 1  # gave up
    assert calls and all(ctx.is_fallback and a == 1 for ctx, a in calls)


def test_plugin_spec_errors_are_clear() -> None:
    with pytest.raises(RuntimeFailure, match="module:callable"):
        load_callable("no_colon_here")
    with pytest.raises(RuntimeFailure, match="cannot import plug-in module"):
        load_callable("surely_not_a_module_xyz:f")
    with pytest.raises(RuntimeFailure, match="has no attribute"):
        load_callable("json:nope")


def test_field_mode_with_the_example_plugin(
    make_harness: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    log_path = tmp_path / "actions.jsonl"
    monkeypatch.setenv("QMIX_EDGE_EXAMPLE_ACTION_LOG", str(log_path))
    sensor = load_callable("examples.field_plugin:read_sensors")
    actuator = load_callable("examples.field_plugin:actuate")
    h = make_harness(mode="field", episodes=2, episode_limit=4, step_period_ms=5)
    h.run_in_thread()
    runners = [
        AgentRunner(FakePolicy(a), h.target, sensor=sensor, actuator=actuator, watchdog_s=5.0)
        for a in ("agent_0", "agent_1")
    ]
    threads = [threading.Thread(target=r.run) for r in runners]
    for t in threads:
        t.start()
    summary = h.wait()
    for t in threads:
        t.join(10)
    assert summary.finished and [e["steps"] for e in summary.episodes] == [4, 4]
    steps = [r for r in read_records(h.coordinator.record_path) if isinstance(r, Step)]
    assert len(steps) == 8
    assert all(set(r.reports or ()) == {"agent_0", "agent_1"} for r in steps)
    assert all("distance" in rep for r in steps for rep in (r.reports or {}).values())
    done = [json.loads(line) for line in log_path.read_text().splitlines()]
    decided = [d for d in done if not d["fallback"]]
    assert len(decided) == 16  # every step of both agents reached the actuator
    # The coordinator recorded the actions the devices actually took.
    by_step = {(d["agent_id"], d["step"], d["episode_id"]): d["action"] for d in decided}
    for r in steps:
        for i, a in enumerate(("agent_0", "agent_1")):
            assert by_step[(a, r.step, r.episode_id)] == r.actions[i]


def run_agent_process(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_a_config_error_exits_2_with_one_line() -> None:
    done = run_agent_process(
        "import sys\n"
        "from qmix_edge.runtime.agent import main\n"
        "sys.exit(main(['--artifacts', '/nonexistent/run', '--agent', 'agent_0',"
        " '--coordinator', '127.0.0.1:1']))\n"
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent/run" in lines[0], done.stderr


def test_a_bad_step_lane_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--artifacts", "a", "--agent", "agent_0", "--step-lane-address", "nohost"]) == 2
    assert "expected a step lane address HOST:PORT" in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback() -> None:
    """An unexpected exception is not dressed up as a usage error: it ends the process with its
    traceback (exit 1), as Python does."""
    done = run_agent_process(
        "import sys\n"
        "from qmix_edge.runtime.agent import cli\n"
        "def broken(*args, **kwargs):\n"
        "    raise ZeroDivisionError('a bug in loading')\n"
        "cli.load_policy = broken\n"
        "sys.exit(cli.main(['--artifacts', 'a', '--agent', 'agent_0',"
        " '--coordinator', '127.0.0.1:1']))\n"
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ZeroDivisionError: a bug in loading" in done.stderr


def test_a_plug_in_in_the_current_directory_loads_as_python_m_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_robot_sensors.py").write_text("def read(ctx):\n    return [0.0]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    with pytest.raises(RuntimeFailure, match="nor from"):
        load_callable("no_such_module_here:read")
    assert load_callable("my_robot_sensors:read")(None) == [0.0]
