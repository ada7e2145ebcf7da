"""A tiny PettingZoo parallel env that emits a NaN or inf at a chosen step (the finite-guard tests).

Used by id, as a user's env would be: ``faulty_envs:faulty_team`` with env_kwargs
``{"fault": "observation" | "state" | "reward", "at_step": k, "seed_modulus": m}``. The fault is
in every episode whose reset seed is divisible by ``seed_modulus``, at the ``at_step``-th step (0 =
the reset itself), so an episode's seed alone reproduces it and a run meets it only after a few
clean episodes (and checkpoints).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

AGENTS = ["agent_0", "agent_1"]
OBS_DIM = 3
EPISODE_STEPS = 6


class FaultyTeam(ParallelEnv):  # type: ignore[misc]
    """Two agents, a counter observation, reward 1 when the two actions match."""

    metadata: ClassVar[dict[str, Any]] = {"name": "faulty_team_v0"}

    def __init__(self, fault: str = "observation", at_step: int = 3, seed_modulus: int = 1) -> None:
        self.fault = fault
        self.at_step = at_step
        self.seed_modulus = seed_modulus
        self.max_cycles = EPISODE_STEPS
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self._t = 0
        self._faulty = False

    def observation_space(self, agent: str) -> spaces.Space:
        return spaces.Box(-10.0, 10.0, (OBS_DIM,), np.float32)

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(2)

    def _fault_now(self, field: str) -> bool:
        return self._faulty and self.fault == field and self._t == self.at_step

    def _observations(self) -> dict[str, np.ndarray]:
        out = {}
        for i, a in enumerate(self.possible_agents):
            o = np.array([self._t / EPISODE_STEPS, i, 1.0], np.float32)
            if a == "agent_1" and self._fault_now("observation"):
                o[1] = np.nan
            out[a] = o
        return out

    def state(self) -> np.ndarray:
        s = np.array([self._t / EPISODE_STEPS, 0.5, 0.25, 1.0], np.float32)
        if self._fault_now("state"):
            s[2] = np.nan
        return s

    def reset(self, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self._t = 0
        self._faulty = seed is not None and seed % self.seed_modulus == 0
        return self._observations(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self._t += 1
        match = float(actions["agent_0"] == actions["agent_1"])
        rewards = {a: match for a in self.agents}
        if self._fault_now("reward"):
            rewards["agent_0"] = np.inf
        done = self._t >= EPISODE_STEPS
        terms = {a: False for a in self.agents}
        truncs = {a: done for a in self.agents}
        obs = self._observations()
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def faulty_team(**kwargs: Any) -> FaultyTeam:
    return FaultyTeam(**kwargs)
