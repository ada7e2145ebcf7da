"""Test doubles of the runtime tests: a policy double (the AgentPolicy interface) and an in-process
coordinator harness on port 0. Imported by name (module names are unique across the test tree)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from qmix_edge.runtime.agent import AgentRunner, StepAnswerer
from qmix_edge.runtime.coordinator import AgentSlot, Coordinator, TeamSpec
from qmix_edge.runtime.eval.faulty_agent import AgentFaults, FaultyAnswerer, faulty
from qmix_edge.runtime.proto.v1 import team_pb2 as pb

SHA = {f"agent_{i}": f"{i:x}" * 64 for i in range(2)}


@dataclass
class FakeResult:
    action: int
    q_values: np.ndarray


@dataclass
class FakePolicy:
    """Test double of AgentPolicy: the action is argmax(obs) mod n_actions among allowed ones."""

    agent_id: str
    obs_dim: int = 3
    n_actions: int = 2
    fallback_action: int = 0
    artifact_sha256: str = ""
    resets: int = 0
    recorded: list[int] = field(default_factory=list)
    seen: list[tuple[np.ndarray, np.ndarray | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.artifact_sha256 = self.artifact_sha256 or SHA[self.agent_id]

    def act(
        self, obs: np.ndarray, mask: np.ndarray | None, *, known_finite: bool = False
    ) -> FakeResult:
        self.seen.append((np.array(obs), None if mask is None else np.array(mask)))
        q = np.zeros(self.n_actions, dtype=np.float32)
        q[int(np.argmax(obs)) % self.n_actions] = 1.0
        if mask is not None:
            q[~mask] = -np.inf
        return FakeResult(int(np.argmax(q)), q)

    def reset(self) -> None:
        self.resets += 1

    def record_action(self, action: int) -> None:
        self.recorded.append(action)


class CountingAnswerer(StepAnswerer):
    """The agent's own `StepAnswerer`, wrapped through its public seam so a test can wait for the
    agent to have answered n steps (no polling). Give it to `AgentRunner` as ``answerer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answered = threading.Condition()

    def answer(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply | None:
        reply = super().answer(req, into)
        with self._answered:
            self._answered.notify_all()
        return reply

    def wait_for_steps(self, n: int, timeout: float = 20.0) -> None:
        """Until this agent answered ``n`` steps in all; fails the test after ``timeout``."""
        with self._answered:
            done = self._answered.wait_for(lambda: self.stats.steps >= n, timeout)
        assert done, f"{self.policy.agent_id} answered {self.stats.steps} steps, not {n}"


def answered(runner: AgentRunner, n: int, timeout: float = 20.0) -> None:
    """Wait until ``runner`` (built with ``answerer=CountingAnswerer``) answered ``n`` steps."""
    counting = runner.answerer
    assert isinstance(counting, CountingAnswerer), "build the runner with a CountingAnswerer"
    counting.wait_for_steps(n, timeout)


def two_step_team() -> TeamSpec:
    return TeamSpec(
        team_id="run-test",
        agents=tuple(
            AgentSlot(f"agent_{i}", 3, 2, fallback_action=1, sha256s=frozenset([SHA[f"agent_{i}"]]))
            for i in range(2)
        ),
        env_id="two_step",
    )


class Harness:
    """A coordinator serving on 127.0.0.1:<free port> with its run loop in a thread."""

    def __init__(self, coordinator: Coordinator, record_path: Path | None = None) -> None:
        self.coordinator = coordinator
        self.record_path = record_path
        """Where the coordinator writes its run record (None: no record)."""
        self.port = coordinator.start("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"
        self.summary: Any = None
        self._thread: threading.Thread | None = None

    def run_in_thread(self) -> None:
        def go() -> None:
            self.summary = self.coordinator.run()

        self._thread = threading.Thread(target=go, daemon=True)
        self._thread.start()

    def wait(self, timeout: float = 30.0) -> Any:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the coordinator's run did not finish in time"
        return self.summary

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)


def run_with_a_faulty_agent_1(
    h: Harness, faults: AgentFaults, timeout: float = 60.0
) -> tuple[Any, FaultyAnswerer]:
    """Run ``h``'s coordinator with an honest agent_0 and an agent_1 injecting ``faults`` until
    the run ends: (the run's summary, agent_1's answerer)."""
    h.run_in_thread()
    honest = AgentRunner(FakePolicy("agent_0"), h.target, watchdog_s=10.0)
    hurt = AgentRunner(FakePolicy("agent_1"), h.target, watchdog_s=10.0, answerer=faulty(faults))
    for r in (honest, hurt):
        threading.Thread(target=r.run, daemon=True).start()
    summary = h.wait(timeout)
    assert isinstance(hurt.answerer, FaultyAnswerer)
    return summary, hurt.answerer


def hostile_action(k: int, mask: np.ndarray) -> int:
    """The k-th reply of a hostile agent: in turn out of range (``n_actions + 93``), negative (-1)
    and masked (the lowest action the step's mask forbids; out of range when it forbids none)."""
    n = mask.size
    masked = np.flatnonzero(~mask)
    return [n + 93, -1, int(masked[0]) if masked.size else n][k % 3]


def highest_allowed(k: int, mask: np.ndarray) -> int:
    """An honest reply: the highest action the step's mask allows."""
    return int(np.flatnonzero(mask)[-1])


class ScriptedLaneAgent:
    """An agent double speaking the protocol on the coordinator's step lane, its replies chosen by
    ``choose(k, mask) -> action`` (k counts the steps it answered; see `hostile_action`).

    The constructor joins (JoinRequest with the given artifact hash) and returns once the
    coordinator acknowledged the attach (Attached); a thread then answers every StepRequest. What
    it saw is kept for the test: ``(episode_id, step, mask, sent action)`` per step."""

    def __init__(
        self,
        port: int,
        agent_id: str,
        sha256: str,
        choose: Callable[[int, np.ndarray], int] = hostile_action,
    ) -> None:
        from qmix_edge.runtime import wire
        from qmix_edge.runtime.lane import LaneClient
        from qmix_edge.runtime.proto.v1 import team_pb2 as pb

        self._pb = pb
        self.choose = choose
        self.client = LaneClient("127.0.0.1", port, max_message_bytes=wire.MAX_MESSAGE_BYTES)
        join = pb.JoinRequest(
            protocol_version=wire.PROTOCOL_VERSION,
            agent_id=agent_id,
            artifact_sha256=sha256,
            client_name="scripted double",
        )
        self.client.send(pb.AgentMessage(join=join))
        first = self.client.recv()
        assert first is not None and first.WhichOneof("kind") == "join_reply", first
        self.join_reply = first.join_reply
        second = self.client.recv()
        assert second is not None and second.WhichOneof("kind") == "attached", second
        self.attached = second.attached
        self.steps: list[tuple[int, int, np.ndarray, int]] = []
        self.goodbye: Any = None
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"double-{agent_id}")
        self._thread.start()

    def _serve(self) -> None:
        from qmix_edge.runtime import wire

        pb = self._pb
        n = int(self.join_reply.n_actions)
        while (m := self.client.recv()) is not None:
            kind = m.WhichOneof("kind")
            if kind == "goodbye":
                self.goodbye = m.goodbye
                break
            if kind != "step_request":
                continue
            req = m.step_request
            mask = (
                wire.decode(req.action_mask, name="action_mask", dtype=pb.DTYPE_BOOL, shape=(n,))
                if req.HasField("action_mask")
                else np.ones(n, dtype=bool)
            )
            action = self.choose(len(self.steps), mask)
            self.steps.append((req.episode_id, req.step, mask.copy(), action))
            reply = pb.StepReply(episode_id=req.episode_id, step=req.step, action=action)
            self.client.send(pb.AgentMessage(step_reply=reply))

    def wait(self, timeout: float = 60.0) -> None:
        """Until the coordinator said goodbye (or closed the lane)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the coordinator never said goodbye"

    def close(self) -> None:
        self.client.close()
