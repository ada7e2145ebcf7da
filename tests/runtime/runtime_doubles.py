"""Test doubles of the runtime tests: a policy double (the AgentPolicy interface) and an in-process
coordinator harness on port 0. Imported by name (module names are unique across the test tree)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from qmix_edge.runtime.coordinator import AgentSlot, Coordinator, TeamSpec

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

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
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
