"""Tiny deterministic PettingZoo Parallel envs for the cases the trainer must handle.

Each is a real `pettingzoo.ParallelEnv` (so `pettingzoo.test.parallel_api_test` applies) that runs in
microseconds and whose optimum is known:

- `MaskedChoiceEnv` (``masked_choice``): each step every agent sees a target action and a random
  action mask (the target is always allowed); reward 1 per agent that picks its target. The mask
  comes as PettingZoo's dict observation (``mask_in="obs"``) or in ``info`` (``mask_in="info"``).
  A masked action reaching the env raises (``on_masked="raise"``) or is counted in
  ``masked_actions_taken`` (``"count"``): either way a leak is detectable. Optimum: n_agents per step.
- `MaskedNoopEnv` (``masked_noop``): `MaskedChoiceEnv` whose action 0 (the no-op, and the default
  fallback action of an export) is masked on a fixed schedule: at every odd step for agent 0 and
  every even step for agent 1 (alternating so for more agents), and at every third step each agent
  may take nothing but its target. A runtime that substitutes a masked fallback is caught at once
  (a masked action raises). Optimum: n_agents per step.
- `LeavingAgentsEnv` (``leaving_agents``): agent i leaves (terminated, removed from ``env.agents``)
  after ``lifetimes[i]`` steps; reward 1 per agent that picks its target ``(t + i) % n_actions``.
  When every lifetime ends within ``max_cycles`` the episode terminates, otherwise the time limit
  truncates the survivors. Has ``state()``.
- `SpeakerPairEnv` (``speaker_pair``): heterogeneous. The speaker sees a goal (3) and says one of 3
  words; the listener (obs 4: last word one-hot + time) picks one of 5 actions and the team earns 1
  each step the listener picks the goal (both agents receive it). The word arrives one step late, so
  only the first step is a guess. Has ``state()``.

Numpy and PettingZoo/Gymnasium (the ``[sim]`` extra); no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

# A missing package surfaces as ModuleNotFoundError, which make_env turns into the install hint.
from gymnasium import spaces
from pettingzoo import ParallelEnv


def _one_hot(i: int, n: int) -> np.ndarray:
    v = np.zeros(n, dtype=np.float32)
    v[i] = 1.0
    return v


class _ToyParallelEnv(ParallelEnv):
    """Shared plumbing: fixed spaces per agent, a seeded numpy generator, ``max_cycles``."""

    metadata: dict[str, Any] = {"render_modes": [], "is_parallelizable": True}  # noqa: RUF012

    def __init__(
        self, agents: Sequence[str], max_cycles: int, render_mode: str | None = None
    ) -> None:
        if max_cycles < 1:
            raise ValueError(f"max_cycles must be >= 1; found {max_cycles}")
        self.possible_agents = list(agents)
        self.agents: list[str] = []
        self.max_cycles = max_cycles
        self.render_mode = render_mode
        self._rng = np.random.default_rng()
        self._obs_spaces: dict[str, spaces.Space] = {}
        self._act_spaces: dict[str, spaces.Space] = {}
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def _seed(self, seed: int | None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            for i, a in enumerate(self.possible_agents):
                self._act_spaces[a].seed(seed + i)

    def render(self) -> None:
        return None


class MaskedChoiceEnv(_ToyParallelEnv):
    """Pick your target among the allowed actions (see the module docstring)."""

    def __init__(
        self,
        n_agents: int = 2,
        n_actions: int = 4,
        max_cycles: int = 8,
        mask_in: Literal["obs", "info"] = "obs",
        on_masked: Literal["raise", "count"] = "raise",
        render_mode: str | None = None,
    ) -> None:
        if n_actions < 2:
            raise ValueError(f"n_actions must be >= 2; found {n_actions}")
        if mask_in not in ("obs", "info") or on_masked not in ("raise", "count"):
            raise ValueError(
                f"mask_in must be obs|info and on_masked raise|count; found {mask_in}, {on_masked}"
            )
        super().__init__([f"agent_{i}" for i in range(n_agents)], max_cycles, render_mode)
        self.n_actions = n_actions
        self.mask_in = mask_in
        self.on_masked = on_masked
        self.masked_actions_taken = 0
        obs_box = spaces.Box(0.0, 1.0, (n_actions + 1,), np.float32)
        for a in self.possible_agents:
            self._act_spaces[a] = spaces.Discrete(n_actions)
            if mask_in == "obs":
                self._obs_spaces[a] = spaces.Dict(
                    {"observation": obs_box, "action_mask": spaces.Box(0, 1, (n_actions,), np.int8)}
                )
            else:
                self._obs_spaces[a] = obs_box
        self._targets: dict[str, int] = {}
        self._masks: dict[str, np.ndarray] = {}

    def action_mask(self, agent: str) -> np.ndarray:
        """``agent``'s current action mask (a copy; 1 = allowed)."""
        return self._masks[agent].copy()

    def _draw(self) -> None:
        for a in self.agents:
            mask = (self._rng.random(self.n_actions) < 0.5).astype(np.int8)
            target = int(self._rng.integers(self.n_actions))
            mask[target] = 1
            self._targets[a], self._masks[a] = target, mask

    def _observe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        obs: dict[str, Any] = {}
        infos: dict[str, Any] = {}
        for a in self.agents:
            vec = np.append(_one_hot(self._targets[a], self.n_actions), self.t / self.max_cycles)
            vec = vec.astype(np.float32)
            if self.mask_in == "obs":
                obs[a] = {"observation": vec, "action_mask": self._masks[a].copy()}
                infos[a] = {}
            else:
                obs[a] = vec
                infos[a] = {"action_mask": self._masks[a].copy()}
        return obs, infos

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._seed(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        self._draw()
        return self._observe()

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        rewards: dict[str, float] = {}
        for a in self.agents:
            act = int(actions[a])
            if not self._masks[a][act]:
                self.masked_actions_taken += 1
                if self.on_masked == "raise":
                    raise ValueError(
                        f"{a} took masked action {act} at step {self.t}; allowed: "
                        f"{np.flatnonzero(self._masks[a]).tolist()}"
                    )
            rewards[a] = 1.0 if act == self._targets[a] else 0.0
        self.t += 1
        self._draw()
        obs, infos = self._observe()
        over = self.t >= self.max_cycles
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, over)
        if over:
            self.agents = []
        return obs, rewards, terms, truncs, infos


class MaskedNoopEnv(MaskedChoiceEnv):
    """Pick your target; the no-op action 0 is masked on a schedule (see the module docstring)."""

    def _draw(self) -> None:
        super()._draw()
        for i, a in enumerate(self.possible_agents):
            if a not in self._masks:
                continue
            target, mask = self._targets[a], self._masks[a]
            if self.t % 3 == 2:  # only the target is allowed
                mask[:] = 0
                mask[target] = 1
            elif (self.t + i) % 2 == 1 and target != 0:
                mask[0] = 0


class LeavingAgentsEnv(_ToyParallelEnv):
    """Agents leave the episode at different steps (see the module docstring)."""

    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 3,
        lifetimes: Sequence[int] | None = None,
        max_cycles: int = 10,
        render_mode: str | None = None,
    ) -> None:
        super().__init__([f"agent_{i}" for i in range(n_agents)], max_cycles, render_mode)
        self.lifetimes = (
            tuple(lifetimes) if lifetimes is not None else tuple(2 * i + 3 for i in range(n_agents))
        )
        if len(self.lifetimes) != n_agents or min(self.lifetimes) < 1:
            raise ValueError(
                f"lifetimes must be {n_agents} positive step counts; found {self.lifetimes}"
            )
        self.n_actions = n_actions
        for a in self.possible_agents:
            self._obs_spaces[a] = spaces.Box(0.0, 1.0, (n_actions + 1,), np.float32)
            self._act_spaces[a] = spaces.Discrete(n_actions)

    def _target(self, i: int) -> int:
        return (self.t + i) % self.n_actions

    def _obs(self, i: int) -> np.ndarray:
        return np.append(
            _one_hot(self._target(i), self.n_actions), self.t / self.max_cycles
        ).astype(np.float32)

    def state(self) -> np.ndarray:
        alive = [float(a in self.agents) for a in self.possible_agents]
        return np.asarray([self.t / self.max_cycles, *alive], dtype=np.float32)

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._seed(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: self._obs(i) for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        idx = {a: self.possible_agents.index(a) for a in self.agents}
        rewards = {a: float(int(actions[a]) == self._target(i)) for a, i in idx.items()}
        self.t += 1
        terms = {a: self.t >= self.lifetimes[i] for a, i in idx.items()}
        truncs = {a: self.t >= self.max_cycles and not terms[a] for a in idx}
        obs = {a: self._obs(i) for a, i in idx.items()}
        infos: dict[str, Any] = {a: {} for a in idx}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


class SpeakerPairEnv(_ToyParallelEnv):
    """A heterogeneous speaker/listener pair (see the module docstring)."""

    N_GOALS = 3
    N_LISTENER_ACTIONS = 5

    def __init__(self, max_cycles: int = 3, render_mode: str | None = None) -> None:
        super().__init__(["speaker_0", "listener_0"], max_cycles, render_mode)
        self._obs_spaces["speaker_0"] = spaces.Box(0.0, 1.0, (self.N_GOALS,), np.float32)
        self._act_spaces["speaker_0"] = spaces.Discrete(self.N_GOALS)
        self._obs_spaces["listener_0"] = spaces.Box(0.0, 1.0, (self.N_GOALS + 1,), np.float32)
        self._act_spaces["listener_0"] = spaces.Discrete(self.N_LISTENER_ACTIONS)
        self.goal = 0
        self.word: int | None = None

    def _observe(self) -> dict[str, np.ndarray]:
        heard = (
            np.zeros(self.N_GOALS, np.float32)
            if self.word is None
            else _one_hot(self.word, self.N_GOALS)
        )
        return {
            "speaker_0": _one_hot(self.goal, self.N_GOALS),
            "listener_0": np.append(heard, self.t / self.max_cycles).astype(np.float32),
        }

    def state(self) -> np.ndarray:
        return np.concatenate([self._observe()["speaker_0"], self._observe()["listener_0"]]).astype(
            np.float32
        )

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._seed(seed)
        self.agents = list(self.possible_agents)
        self.t = 0
        self.goal = int(self._rng.integers(self.N_GOALS))
        self.word = None
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        reward = float(int(actions["listener_0"]) == self.goal)
        self.word = int(actions["speaker_0"])
        self.t += 1
        over = self.t >= self.max_cycles
        agents = list(self.agents)
        if over:
            self.agents = []
        return (
            self._observe(),
            dict.fromkeys(agents, reward),
            dict.fromkeys(agents, False),
            dict.fromkeys(agents, over),
            {a: {} for a in agents},
        )
