"""The collector: acting in ``n_envs`` environments at once and writing whole episodes to replay.

One batched forward of the agent network per vector step chooses the actions of every agent in
every env. Exploration is epsilon-greedy *honouring masks*: a random action is drawn uniformly among
the agent's available actions only, and the greedy action is the argmax over available actions (ties
to the lowest index, like torch.argmax and the exported graph).

Episodes end at different times: a finished env's episode is copied into replay and the env is
reset by index with a fresh seed drawn from the run's env-seed stream, so no env idles. The
collector only uses the `VectorTeamEnv` interface (``reset_envs``, ``step``), so a batched array env
can replace the Python envs without changing this module.

Greedy evaluation (`evaluate`) runs on separate environments with its own fixed seeds.

Exact resume: the in-progress episodes (their seeds and actions so far) are part of the checkpoint.
`Collector.restore` replays each env's recorded actions from its seed so the envs are back in the
very state they were in; this relies on an env being deterministic given its reset seed and actions
(true of PettingZoo MPE, the matrix games and Gymnasium classic control), and is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from qmix_edge.envs import EnvSpec, TeamStep, VectorStepResult, VectorTeamEnv

from .finite import check_team_arrays
from .networks import AgentNetwork
from .replay import EPISODE_FIELDS, EpisodeBatch, empty_episodes

logger = logging.getLogger(__name__)

SEED_HIGH = 2**31 - 1


def select_actions(
    q: np.ndarray,
    avail: np.ndarray,
    epsilon: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Epsilon-greedy joint actions honouring masks. (E, n, A) q and avail -> (E, n) int64.

    Greedy = argmax over available actions, ties to the lowest index. Exploring = uniform among the
    available actions. The RNG is consumed by the same amount every call (reproducible streams).
    """
    greedy = np.where(avail, q, -np.inf).argmax(axis=-1)  # (E, n)
    if rng is None or epsilon <= 0.0:
        return greedy.astype(np.int64)
    explore = rng.random(greedy.shape) < epsilon  # (E, n)
    # argmax of iid uniforms restricted to the available actions = a uniform available action.
    scores = np.where(avail, rng.random(avail.shape), -1.0)  # (E, n, A)
    random_actions = scores.argmax(axis=-1)
    return np.where(explore, random_actions, greedy).astype(np.int64)


class EpisodeSink(Protocol):
    """Where finished episodes go: the replay buffer, or the queue of a collector process."""

    def add(self, episodes: EpisodeBatch, rows: np.ndarray | list[int]) -> None:
        """Copy episodes ``rows`` of ``episodes``."""


class EpisodeStats(NamedTuple):
    """One finished training or evaluation episode."""

    team_return: float
    """Sum of the team rewards over the episode."""
    length: int
    """Env steps in the episode."""
    terminated: bool
    """Ended in a real terminal (False: truncated)."""


class Policy:
    """Batched action selection with the agent network (hidden state and previous action per env)."""

    def __init__(self, agent_net: AgentNetwork, n_envs: int) -> None:
        self.net = agent_net
        self.n_envs = n_envs
        n = agent_net.n_agents
        self.hidden = torch.zeros(n_envs, n, agent_net.hidden_dim)  # (E, n, H)
        self.prev_actions = torch.full((n_envs, n), -1, dtype=torch.int64)  # (E, n)

    def reset(self, indices: np.ndarray | Sequence[int]) -> None:
        """Episode start for these envs: zero hidden state, no previous action."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        self.hidden[idx] = 0.0
        self.prev_actions[idx] = -1

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values (E, n, A) for obs (E, n, obs_dim); advances the hidden state."""
        with torch.inference_mode():
            q, h = self.net(
                torch.from_numpy(obs),
                self.prev_actions if self.net.use_prev_action else None,
                self.hidden if self.net.recurrent else None,
            )
            if h is not None:
                self.hidden.copy_(h)
        return q.numpy()

    def observe_actions(self, actions: np.ndarray) -> None:
        self.prev_actions.copy_(torch.from_numpy(actions))


class Collector:
    """Steps a `VectorTeamEnv` with epsilon-greedy batched actions, filling an `EpisodeReplay`."""

    def __init__(
        self,
        venv: VectorTeamEnv,
        agent_net: AgentNetwork,
        episode_limit: int,
        action_rng: np.random.Generator,
        seed_rng: np.random.Generator,
    ) -> None:
        self.venv = venv
        self.spec: EnvSpec = venv.spec
        self.n_envs = venv.n_envs
        self.episode_limit = episode_limit
        self.action_rng = action_rng
        self.seed_rng = seed_rng
        s = self.spec
        self.pending: EpisodeBatch = empty_episodes(
            self.n_envs, episode_limit, s.n_agents, s.max_obs_dim, s.state_dim, s.max_n_actions
        )
        self.t = np.zeros(self.n_envs, dtype=np.int64)  # steps taken in each env's episode
        self.seeds = np.zeros(self.n_envs, dtype=np.int64)  # each env's current episode seed
        self.returns = np.zeros(self.n_envs, dtype=np.float64)
        self.policy = Policy(agent_net, self.n_envs)
        self._obs = np.zeros((self.n_envs, s.n_agents, s.max_obs_dim), np.float32)
        self._avail = np.zeros((self.n_envs, s.n_agents, s.max_n_actions), bool)
        self._actions: np.ndarray | None = None
        self.last_rewards = np.zeros(0, np.float32)  # rewards of the episodes the last step ended
        self._rows = np.arange(self.n_envs)

    # --- episode starts ---------------------------------------------------------------------------
    def start(self) -> None:
        """Reset every env with fresh seeds (the start of a run)."""
        self._reset(np.arange(self.n_envs))

    def _draw_seeds(self, n: int) -> np.ndarray:
        return self.seed_rng.integers(0, SEED_HIGH, size=n, dtype=np.int64)

    def _reset(self, idx: np.ndarray) -> None:
        seeds = self._draw_seeds(idx.size)
        first = self.venv.reset_envs(idx, seeds.tolist())
        self._begin(idx, seeds, first)

    def _begin(self, idx: np.ndarray, seeds: np.ndarray, first: TeamStep) -> None:
        check_team_arrays(
            self.spec.env_id,
            self.spec.agent_ids,
            obs=first.obs,
            state=first.state,
            steps=np.zeros(idx.size, np.int64),
            seeds=seeds,
            rows=idx,
        )
        for name in EPISODE_FIELDS:
            getattr(self.pending, name)[idx] = 0
        p = self.pending
        p.obs[idx, 0] = first.obs
        p.state[idx, 0] = first.state
        p.avail[idx, 0] = first.avail
        p.alive[idx, 0] = first.alive
        self._obs[idx] = first.obs
        self._avail[idx] = first.avail
        self.t[idx] = 0
        self.seeds[idx] = seeds
        self.returns[idx] = 0.0
        self.policy.reset(idx)

    # --- stepping ---------------------------------------------------------------------------------
    def act(self, epsilon: float) -> np.ndarray:
        """Choose the joint actions of every env (one batched forward). -> (n_envs, n_agents)."""
        q = self.policy.q_values(self._obs)  # (E, n, A)
        actions = select_actions(q, self._avail, epsilon, self.action_rng)
        self.policy.observe_actions(actions)
        self._actions = actions
        return actions

    def record(self, result: VectorStepResult, replay: EpisodeSink) -> list[EpisodeStats]:
        """Write one vector step into the pending episodes; finished ones go to ``replay``.

        Finished envs are reset at once with new seeds. Returns the finished episodes' stats.
        """
        assert self._actions is not None, "act() must come before record()"
        rows, t, p, nxt = self._rows, self.t, self.pending, result.next
        check_team_arrays(
            self.spec.env_id,
            self.spec.agent_ids,
            obs=nxt.obs,
            state=nxt.state,
            reward=result.reward,
            agent_rewards=result.agent_rewards,
            steps=t + 1,
            seeds=self.seeds,
        )
        p.actions[rows, t] = self._actions
        p.reward[rows, t] = result.reward
        p.terminated[rows, t] = result.terminated
        p.filled[rows, t] = True
        p.obs[rows, t + 1] = nxt.obs
        p.state[rows, t + 1] = nxt.state
        p.avail[rows, t + 1] = nxt.avail
        p.alive[rows, t + 1] = nxt.alive
        self._obs[:] = nxt.obs
        self._avail[:] = nxt.avail
        self.returns += result.reward
        self.t += 1
        self._actions = None
        done = result.terminated | result.truncated | (self.t >= self.episode_limit)
        if not done.any():
            return []
        finished = np.flatnonzero(done)
        replay.add(p, finished)
        self.last_rewards = p.reward[finished][p.filled[finished]].copy()  # for reward statistics
        stats = [
            EpisodeStats(float(self.returns[i]), int(self.t[i]), bool(result.terminated[i]))
            for i in finished
        ]
        self._reset(finished)
        return stats

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able bookkeeping (RNG states, seeds, lengths, returns)."""
        return {
            "action_rng": self.action_rng.bit_generator.state,
            "seed_rng": self.seed_rng.bit_generator.state,
            "t": self.t.tolist(),
            "seeds": self.seeds.tolist(),
            "returns": self.returns.tolist(),
        }

    def snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(`state_dict`, copies of the in-progress episodes, hidden state and previous actions)."""
        arrays = {k: getattr(self.pending, k).copy() for k in EPISODE_FIELDS}
        arrays["hidden"] = self.policy.hidden.numpy().copy()
        arrays["prev_actions"] = self.policy.prev_actions.numpy().copy()
        return self.state_dict(), arrays

    def restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Bring the envs and pending episodes back to a checkpoint (see the module docstring)."""
        self.action_rng.bit_generator.state = state["action_rng"]
        self.seed_rng.bit_generator.state = state["seed_rng"]
        for name in EPISODE_FIELDS:
            getattr(self.pending, name)[:] = arrays[name]
        self.t[:] = state["t"]
        self.seeds[:] = state["seeds"]
        self.returns[:] = state["returns"]
        self.policy.hidden.copy_(torch.from_numpy(arrays["hidden"]))
        self.policy.prev_actions.copy_(torch.from_numpy(arrays["prev_actions"]))
        view = replay_envs(self.venv, self.seeds, self.t, self.pending.actions)
        rows = self._rows
        expected = self.pending.obs[rows, self.t]
        if not np.allclose(view.obs, expected, atol=1e-5):
            bad = np.flatnonzero(~np.isclose(view.obs, expected, atol=1e-5).all(axis=(1, 2)))
            logger.warning(
                "envs %s did not reproduce their recorded episodes from seed and actions (the env "
                "is not deterministic); the resumed run continues from the replayed state",
                bad.tolist(),
            )
        self._obs[:] = view.obs
        self._avail[:] = view.avail


def replay_envs(
    venv: VectorTeamEnv, seeds: np.ndarray, lengths: np.ndarray, actions: np.ndarray
) -> TeamStep:
    """Reset env i with seeds[i] and replay actions[i, :lengths[i]]; return every env's view.

    All envs step together, so env i is (re)started ``T - lengths[i]`` steps after the first
    (T = the longest) and ends its replay exactly at the last step; before its start it runs
    harmless placeholder steps (first available action), which the reset then wipes out.
    """
    n_envs = venv.n_envs
    idx_all = np.arange(n_envs)
    view = venv.reset_envs(idx_all, seeds.tolist())
    obs, avail = view.obs.copy(), view.avail.copy()
    state, alive = view.state.copy(), view.alive.copy()
    total = int(lengths.max()) if n_envs else 0
    starts = total - lengths
    for s in range(total):
        starting = np.flatnonzero((starts == s) & (lengths > 0))
        if starting.size and s > 0:
            v = venv.reset_envs(starting, seeds[starting].tolist())
            obs[starting], avail[starting] = v.obs, v.avail
            state[starting], alive[starting] = v.state, v.alive
        acts = avail.argmax(axis=-1).astype(np.int64)  # placeholder: first available action
        replaying = np.flatnonzero(starts <= s)
        acts[replaying] = actions[replaying, s - starts[replaying]]
        res = venv.step(acts)
        obs, avail = res.next.obs.copy(), res.next.avail.copy()
        state, alive = res.next.state.copy(), res.next.alive.copy()
    not_started = np.flatnonzero(lengths == 0)
    if not_started.size and total > 0:
        v = venv.reset_envs(not_started, seeds[not_started].tolist())
        obs[not_started], avail[not_started] = v.obs, v.avail
        state[not_started], alive[not_started] = v.state, v.alive
    return TeamStep(obs=obs, avail=avail, alive=alive, state=state)


def evaluate(
    agent_net: AgentNetwork, venv: VectorTeamEnv, seeds: Sequence[int], episode_limit: int
) -> list[EpisodeStats]:
    """Greedy episodes (one per seed) on ``venv``, ``venv.n_envs`` at a time, batched forwards."""
    *_, stats = evaluation_steps(agent_net, venv, seeds, episode_limit)
    assert stats is not None
    return stats


def evaluation_steps(
    agent_net: AgentNetwork, venv: VectorTeamEnv, seeds: Sequence[int], episode_limit: int
) -> Iterator[list[EpisodeStats] | None]:
    """`evaluate` one vector step at a time: yields None after each step, then the episodes'
    stats (the collector process spreads an evaluation over its rounds this way)."""
    out: list[EpisodeStats] = []
    n_envs = venv.n_envs
    policy = Policy(agent_net, n_envs)
    ids = venv.spec.env_id, venv.spec.agent_ids
    for start in range(0, len(seeds), n_envs):
        batch = list(seeds[start : start + n_envs])
        idx = np.arange(len(batch))
        view = venv.reset_envs(idx, batch)
        batch_seeds = np.asarray(batch, dtype=np.int64)
        check_team_arrays(
            *ids,
            obs=view.obs,
            state=view.state,
            steps=np.zeros(idx.size, np.int64),
            seeds=batch_seeds,
            context="evaluation",
        )
        obs = np.zeros((n_envs, *view.obs.shape[1:]), np.float32)
        avail = np.ones((n_envs, *view.avail.shape[1:]), bool)
        obs[idx], avail[idx] = view.obs, view.avail
        policy.reset(np.arange(n_envs))
        running = np.zeros(n_envs, bool)
        running[idx] = True
        returns = np.zeros(n_envs)
        lengths = np.zeros(n_envs, np.int64)
        terminated = np.zeros(n_envs, bool)
        while running.any():
            actions = select_actions(policy.q_values(obs), avail, 0.0, None)
            policy.observe_actions(actions)
            res = venv.step(actions)
            lengths += running
            stepped = np.flatnonzero(running)
            check_team_arrays(
                *ids,
                obs=res.next.obs[stepped],
                state=res.next.state[stepped],
                reward=res.reward[stepped],
                agent_rewards=res.agent_rewards[stepped],
                steps=lengths[stepped],
                seeds=batch_seeds[stepped],
                rows=stepped,
                context="evaluation",
            )
            returns += np.where(running, res.reward, 0.0)
            terminated |= running & res.terminated
            obs, avail = res.next.obs, res.next.avail
            running &= ~(res.terminated | res.truncated | (lengths >= episode_limit))
            if running.any():
                yield None
        out += [EpisodeStats(float(returns[i]), int(lengths[i]), bool(terminated[i])) for i in idx]
        if start + n_envs < len(seeds):
            yield None
    yield out
