"""The real-time world of `qmix-eval --field`: agents on their own loops, talking to it through
their ordinary sensor and actuator plug-ins (UDP), the world applying each agent's latest action."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from qmix_edge.envs import TwoStepGame
from qmix_edge.runtime.agent.autonomous import AutonomousLoop, LoopSettings
from qmix_edge.runtime.eval.field_sim import FieldSimulator, SimLink


@dataclass
class Result:
    action: int


class HighestAllowed:
    """A stand-in policy: the highest allowed action (two_step's 2B branch, payoff 8 for (1, 1))."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id, self.obs_dim, self.n_actions, self.fallback_action = agent_id, 3, 2, 0

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None, **kw: Any) -> Result:
        allowed = np.ones(self.n_actions, bool) if mask is None else mask
        return Result(int(np.flatnonzero(allowed)[-1]))

    def record_action(self, action: int) -> None:
        pass

    def reset(self) -> None:
        pass


def test_agents_on_their_own_clocks_play_the_simulated_world() -> None:
    env = TwoStepGame()
    ids = [a.agent_id for a in env.spec.agents]
    sim = FieldSimulator(env, ids, [0, 0], rate_hz=5, seed=0, episodes=3)
    loops = []
    for agent in ids:
        link = SimLink(sim.address)
        loop = AutonomousLoop(
            HighestAllowed(agent),
            link.sensor,
            link.actuator,
            LoopSettings(rate_hz=100, autostart=True, stale_after_s=1.0),
        )
        loops.append(loop)
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for t in threads:
        t.start()
    try:
        assert sim.wait_for_agents(10)
        episodes = sim.run()
    finally:
        for loop in loops:
            loop.stop()
        for t in threads:
            t.join(5)
        sim.close()
    assert [e.seed for e in episodes] == [0, 1, 2] and all(e.steps == 2 for e in episodes)
    substituted = sum(sum(e.substituted.values()) for e in episodes)
    assert substituted < 3 * 2 * 2  # the agents' own decisions reached the world
    for e in episodes:
        if not any(e.substituted.values()):  # every step played by the agents' decisions
            assert e.ret == 8.0
    assert all(loop.stats.decisions > 0 for loop in loops)
    # the world's "episode over" ends each agent's episode once; the next one starts with the
    # world's next episode (the last one started waits for a world episode that never comes)
    assert all(loop.stats.episodes in (3, 4) for loop in loops), [
        lp.stats.snapshot() for lp in loops
    ]
