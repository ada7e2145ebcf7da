"""Deliberately odd PettingZoo envs for the envs tests (imported as ``envs_fakes:<name>``).

Not collected by pytest (no ``test_`` prefix). Worker processes import it too: spawn copies the
parent's ``sys.path``, which pytest has extended with this folder.
"""

from __future__ import annotations

import os
import types
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class FakeParallelEnv(ParallelEnv):
    """Two agents with given spaces; ``max_cycles`` steps; rewards agent index + action."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        obs_space: Any = None,
        act_space: Any = None,
        max_cycles: int | None = 5,
        infos_fn: Any = None,
    ) -> None:
        self.possible_agents = ["a", "b"]
        self.agents: list[str] = []
        self._obs = obs_space if obs_space is not None else spaces.Box(-1, 1, (2,), np.float32)
        self._act = act_space if act_space is not None else spaces.Discrete(3)
        if max_cycles is not None:
            self.max_cycles = max_cycles
        self._limit = max_cycles or 10_000
        self._infos_fn = infos_fn
        self.t = 0
        self.received: list[dict[str, Any]] = []

    def observation_space(self, agent: str) -> Any:
        return self._obs

    def action_space(self, agent: str) -> Any:
        return self._act

    def _observe(self) -> dict[str, Any]:
        return {a: np.full(self._obs.shape, self.t / 100, np.float32) for a in self.agents}

    def _infos(self) -> dict[str, Any]:
        if self._infos_fn is None:
            return {a: {} for a in self.agents}
        return {a: self._infos_fn(self.t, a) for a in self.agents}

    def reset(self, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._observe(), self._infos()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.received.append(dict(actions))
        rewards = {a: float(i + int(actions[a])) for i, a in enumerate(self.agents)}
        self.t += 1
        over = self.t >= self._limit
        agents = list(self.agents)
        obs, infos = self._observe(), self._infos()
        if over:
            self.agents = []
        return obs, rewards, dict.fromkeys(agents, False), dict.fromkeys(agents, over), infos


def continuous_env() -> FakeParallelEnv:
    return FakeParallelEnv(act_space=spaces.Box(0, 1, (2,), np.float32))


def multidiscrete_env() -> FakeParallelEnv:
    return FakeParallelEnv(act_space=spaces.MultiDiscrete([2, 3]))


def image_env() -> FakeParallelEnv:
    return FakeParallelEnv(obs_space=spaces.Box(0, 1, (4, 4), np.float32))


def unlimited_env() -> FakeParallelEnv:
    return FakeParallelEnv(max_cycles=None)


def offset_env() -> FakeParallelEnv:
    return FakeParallelEnv(act_space=spaces.Discrete(3, start=10))


def empty_mask_env() -> FakeParallelEnv:
    """Agent b has no available action on step 1; agent a's mask allows only action 2."""

    def infos(t: int, agent: str) -> dict[str, Any]:
        if agent == "b" and t == 1:
            return {"action_mask": np.zeros(3, np.int8)}
        return {
            "action_mask": np.array([0, 0, 1], np.int8) if agent == "a" else np.ones(3, np.int8)
        }

    return FakeParallelEnv(infos_fn=infos)


class _AecLike:
    """Has the AEC API's tell-tale agent_iter."""

    possible_agents = ("a",)

    def agent_iter(self) -> Any:
        return iter(())


def aec_env() -> _AecLike:
    return _AecLike()


aec_only_module = types.ModuleType("aec_only_module")
aec_only_module.env = aec_env  # type: ignore[attr-defined]

not_callable = 42


class ExplodingEnv(FakeParallelEnv):
    """Fails on step ``fail_at``: raises RuntimeError, or kills its process (``how="exit"``)."""

    def __init__(self, fail_at: int = 2, how: str = "raise") -> None:
        super().__init__(max_cycles=10)
        self.fail_at = fail_at
        self.how = how

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self.t + 1 >= self.fail_at:
            if self.how == "exit":
                os._exit(3)
            raise RuntimeError(f"boom at step {self.t + 1}")
        return super().step(actions)
