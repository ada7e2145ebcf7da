"""A small Gymnasium multi-agent env in EPyMARL's convention, registered on import as FakeTeam-v0.

Used as ``gymma_fakes:FakeTeam-v0`` (importing the module registers the id, like lbforaging). Each
of ``n`` agents sees ``[t, i]`` and may pick among 3 actions; what the team gets back is set by the
constructor, to exercise every branch of the adapter: per-agent rewards (agent i gets its action +
i) or one shared reward, one ``done`` for the team or one per agent (agent i is done after
``lifetimes[i]`` steps), and action masks in ``info`` (action 2 forbidden).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class FakeTeamEnv(gym.Env):
    def __init__(
        self,
        n: int = 2,
        shared_reward: bool = False,
        lifetimes: tuple[int, ...] | None = None,
        masks: bool = False,
        max_steps: int = 6,
        obs_shape: tuple[int, ...] = (2,),
        multidiscrete: bool = False,
    ) -> None:
        self.n_agents = n
        self.shared_reward = shared_reward
        self.lifetimes = lifetimes
        self.masks = masks
        self.max_steps = max_steps
        self.obs_shape = obs_shape
        act: Any = gym.spaces.MultiDiscrete([3, 2]) if multidiscrete else gym.spaces.Discrete(3)
        self.action_space = gym.spaces.Tuple([act] * n)
        self.observation_space = gym.spaces.Tuple(
            [gym.spaces.Box(-100, 100, obs_shape, np.float32)] * n
        )
        self.t = 0
        self.received: list[list[int]] = []

    def _obs(self) -> tuple[np.ndarray, ...]:
        out = []
        for i in range(self.n_agents):
            o = np.zeros(int(np.prod(self.obs_shape)), np.float32)
            o[:2] = [self.t, i]
            out.append(o.reshape(self.obs_shape))
        return tuple(out)

    def _info(self) -> dict[str, Any]:
        if not self.masks:
            return {}
        return {"action_mask": [np.array([1, 1, 0], bool)] * self.n_agents}

    def reset(self, seed: int | None = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), self._info()

    def step(self, actions: Any) -> tuple[Any, Any, Any, bool, dict[str, Any]]:
        self.t += 1
        self.received.append([int(a) for a in actions])
        over = self.t >= self.max_steps  # the env's own limit, reported as done (as lbforaging)
        done: Any
        if self.lifetimes is None:
            done = over
        else:
            done = [over or self.t >= life for life in self.lifetimes]
        if self.shared_reward:
            reward: Any = float(sum(int(a) for a in actions))
        else:
            reward = [float(int(a) + i) for i, a in enumerate(actions)]
        return self._obs(), reward, done, False, self._info()


gym.register("FakeTeam-v0", entry_point="gymma_fakes:FakeTeamEnv", kwargs={"n": 2, "max_steps": 6})
