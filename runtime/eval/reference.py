"""The in-process reference of qmix-eval: the same artifacts stepping the same environment in one
process, with the same per-episode seeds, through the same legal-action rule as the coordinator.

With no faults every distributed episode's return must equal its reference return exactly (the
agents run the same ONNX graphs on bit-identical float32 inputs): that equality is the proof that
decentralized execution is faithful. No torch here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from ..legal import legal_action
from .config import EvalConfig


def run_reference(
    cfg: EvalConfig, agent_ids: Sequence[str], substituted: Collection[str] = ()
) -> list[float]:
    """The same artifacts in one process: one AgentPolicy per agent, same env, same seeds.

    Every action goes through the legal-action rule the coordinator applies. The agents named in
    ``substituted`` never decide: each of their steps is the rule's substitute (the fallback
    action if allowed, else the lowest allowed one), which is what the coordinator applies for a
    seat that is empty or whose every reply is invalid."""
    from ..coordinator import TeamSpec, make_team_env
    from ..policy import AgentPolicy

    unknown = sorted(set(substituted) - set(agent_ids))
    if unknown:
        raise ValueError(f"substituted agents {unknown} are not in the team {list(agent_ids)}")
    team = TeamSpec.from_artifacts(cfg.artifacts)
    env = make_team_env(team, cfg.env, cfg.episode_limit)
    policies = [AgentPolicy.load(cfg.artifacts, a) for a in agent_ids]
    deciding = [a not in substituted for a in agent_ids]
    returns = []
    try:
        for i in range(cfg.episodes):
            ts = env.reset(seed=cfg.seed + i)
            for p in policies:
                p.reset()
            total = 0.0
            for _ in range(env.spec.episode_limit):
                actions = np.zeros(len(policies), dtype=np.int64)  # (n_agents,)
                for k, p in enumerate(policies):
                    if ts.alive[k]:
                        obs = ts.obs[k, : p.obs_dim]  # (obs_dim,) float32
                        mask = np.array(ts.avail[k, : p.n_actions], dtype=bool)  # (n_actions,)
                        reply = int(p.act(obs, mask).action) if deciding[k] else None
                        actions[k] = legal_action(reply, p.fallback_action, p.n_actions, mask)
                result = env.step(actions)
                total += float(result.reward)
                ts = result.next
                if result.done:
                    break
            returns.append(total)
    finally:
        env.close()
    return returns
