"""Small VMAS scenarios of our own for the VMAS adapter's tests (``vmas:vmas_test_scenarios:<Class>``).

VMAS's own scenarios give no action masks and never draw noise in their rewards; these do, so the
tests can see masks honoured and each env keep its own random streams.
"""

from __future__ import annotations

import torch
from vmas.simulator.core import Agent, World
from vmas.simulator.scenario import BaseScenario
from vmas.simulator.utils import ScenarioUtils

N_ACTIONS = 9  # a 2-D holonomic agent: 3 choices per axis


class MaskedScenario(BaseScenario):
    """Two agents walking around the origin.

    - agent_0 may use only its even actions; agent_1 may use all but action ``t % 9`` (t = steps
      into the episode), and nothing at all at step ``block_all_at``.
    - The episode ends (``done``) after ``done_at`` steps.
    - Each agent's reward is minus its distance to the origin, plus ``noise`` times a normal draw.
    """

    def make_world(self, batch_dim: int, device: torch.device, **kwargs: object) -> World:
        self.done_at = int(kwargs.pop("done_at", 1000))  # type: ignore[call-overload]
        self.noise = float(kwargs.pop("noise", 0.0))  # type: ignore[arg-type]
        self.block_all_at = int(kwargs.pop("block_all_at", -1))  # type: ignore[call-overload]
        ScenarioUtils.check_kwargs_consumed(kwargs)
        world = World(batch_dim, device)
        for i in range(2):
            world.add_agent(Agent(name=f"agent_{i}", collide=False))
        self.t = torch.zeros(batch_dim, dtype=torch.long, device=device)
        return world

    def reset_world_at(self, env_index: int | None = None) -> None:
        rows = 1 if env_index is not None else self.world.batch_dim
        for agent in self.world.agents:
            pos = torch.zeros((rows, 2), device=self.world.device).uniform_(-1.0, 1.0)
            agent.set_pos(pos, batch_index=env_index)
        if env_index is None:
            self.t[:] = 0
        else:
            self.t[env_index] = 0

    def post_step(self) -> None:
        self.t += 1

    def observation(self, agent: Agent) -> torch.Tensor:
        return torch.cat([agent.state.pos, agent.state.vel, self.t.unsqueeze(-1).float()], dim=-1)

    def reward(self, agent: Agent) -> torch.Tensor:
        rew = -torch.linalg.vector_norm(agent.state.pos, dim=-1)
        if self.noise:
            rew = rew + self.noise * torch.randn(self.world.batch_dim, device=self.world.device)
        return rew

    def done(self) -> torch.Tensor:
        return self.t >= self.done_at

    def info(self, agent: Agent) -> dict[str, torch.Tensor]:
        batch = self.world.batch_dim
        mask = torch.ones(batch, N_ACTIONS, dtype=torch.bool, device=self.world.device)
        if agent.name == "agent_0":
            mask[:, 1::2] = False
        else:
            mask[torch.arange(batch), self.t % N_ACTIONS] = False
            mask[self.t == self.block_all_at] = False
        return {"action_mask": mask}


class DictObsScenario(MaskedScenario):
    """MaskedScenario observing a dict of tensors (which the adapter refuses)."""

    def observation(self, agent: Agent) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"pos": agent.state.pos, "vel": agent.state.vel}


class NotAScenario:
    """Not a VMAS scenario at all."""
