"""The parity gate: the exported graphs must reproduce the trained torch network, step by step.

A `Recording` is a multi-step, multi-episode trajectory of the whole team: padded observations,
action masks, the previous actions and episode starts. It comes from real environment rollouts
(`record_env`) and/or synthetic inputs (`record_synthetic`); both run the *training* network
(`AgentNetwork.forward` on the padded team batch, agent-id one-hots and all) as the reference, with
its hidden state carried and reset at episode starts, and pick the executed actions epsilon-greedily
so that ``prev_action`` covers non-greedy actions too. Masks are random subsets (at least one action
allowed) of what the environment allows.

`check_parity` replays each agent's slice through its ONNX graph in onnxruntime the way a device
does (batch 1, its own ``h_out`` fed back, reset at episode starts) and requires:
- Q-values within ``q_atol + q_rtol * |Q_torch|`` of torch on the agent's own actions at every
  step (1e-5 absolute, as DESIGN.md asks, plus ~8 float32 ulps relative, because float32 Q-values
  of magnitude 100 are only representable to ~8e-6 and two correct kernels that sum in different
  orders differ by a few ulps);
- the graph's ``action`` equal to the masked argmax of its own ``q_values`` (ties to the lowest);
- the graph's action equal to torch's greedy action, except near-ties (torch's Q gap between the two
  actions below ``tie_tol`` plus the same relative slack), which are counted and reported;
- the same Q-values when all steps run as one batch (dynamic batch dimension, torch's states fed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from qmix_edge.envs import EnvSpec, TeamEnv
from qmix_edge.runtime.artifact import ParityFigures
from qmix_edge.runtime.policy import session_options
from qmix_edge.runtime.tensors import TensorNames
from qmix_edge.train.networks import AgentNetwork

from .errors import ParityError

log = logging.getLogger(__name__)

Q_ATOL = 1e-5
"""Absolute part of the largest |Q_torch - Q_onnx| the gate accepts."""
Q_RTOL = 1e-6
"""Relative part (times |Q_torch|): about 8 float32 ulps, so large returns do not fail spuriously."""
TIE_TOL = 2e-5
"""Q gap under which differing greedy actions count as a near-tie (twice the Q tolerance)."""


@dataclass(frozen=True)
class Recording:
    """A team trajectory with the torch reference outputs. T = total steps over all episodes."""

    obs: np.ndarray
    """float32 (T, n_agents, max_obs_dim): padded observations."""
    mask: np.ndarray
    """bool (T, n_agents, max_n_actions): allowed actions (False past an agent's own count)."""
    prev_action: np.ndarray
    """int64 (T, n_agents): the previously executed action, -1 at episode start."""
    start: np.ndarray
    """bool (T,): the step is the first of an episode (hidden state reset)."""
    h_in: np.ndarray
    """float32 (T, n_agents, hidden): torch's hidden state entering the step (zeros for mlp)."""
    q: np.ndarray
    """float32 (T, n_agents, max_n_actions): torch's Q-values."""
    greedy: np.ndarray
    """int64 (T, n_agents): torch's masked greedy actions."""
    sources: tuple[str, ...]
    """``env`` and/or ``synthetic``."""

    @property
    def n_steps(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.start.sum())

    @staticmethod
    def concat(parts: Sequence[Recording]) -> Recording:
        return Recording(
            obs=np.concatenate([p.obs for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            prev_action=np.concatenate([p.prev_action for p in parts]),
            start=np.concatenate([p.start for p in parts]),
            h_in=np.concatenate([p.h_in for p in parts]),
            q=np.concatenate([p.q for p in parts]),
            greedy=np.concatenate([p.greedy for p in parts]),
            sources=tuple(dict.fromkeys(s for p in parts for s in p.sources)),
        )


def masked_argmax(q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """argmax over the last axis among allowed entries; the first maximum wins (as torch)."""
    return np.argmax(np.where(mask, q, -np.inf), axis=-1).astype(np.int64)


def _random_submask(avail: np.ndarray, rng: np.random.Generator, p_full: float) -> np.ndarray:
    """A random subset of ``avail`` (n_agents, A) keeping at least one allowed action per row."""
    out = avail.copy()
    for i in range(avail.shape[0]):
        if rng.random() < p_full:
            continue
        allowed = np.flatnonzero(avail[i])
        keep = rng.random(allowed.size) < 0.6
        keep[rng.integers(allowed.size)] = True
        out[i] = False
        out[i, allowed[keep]] = True
    return out


class _TorchTeam:
    """Steps the training network over a team, carrying its hidden state."""

    def __init__(self, net: AgentNetwork) -> None:
        self.net = net
        self.h = net.initial_hidden(1)  # (1, n_agents, hidden)

    def reset(self) -> None:
        self.h = self.net.initial_hidden(1)

    @torch.no_grad()
    def step(self, obs: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(h_in (n_agents, hidden), q (n_agents, max_n_actions)) for one team step."""
        h_in = self.h[0].numpy().copy()
        q, h_next = self.net(
            torch.from_numpy(obs)[None],  # (1, n_agents, max_obs_dim)
            torch.from_numpy(prev)[None] if self.net.use_prev_action else None,  # (1, n_agents)
            self.h if self.net.recurrent else None,
        )
        if h_next is not None:
            self.h = h_next
        return h_in, q[0].numpy().copy()


class _Recorder:
    def __init__(self, net: AgentNetwork, spec: EnvSpec, rng: np.random.Generator, eps: float):
        self.team = _TorchTeam(net)
        self.spec = spec
        self.rng = rng
        self.eps = eps
        self.hidden = net.hidden_dim
        self.rows: dict[str, list[np.ndarray]] = {
            k: [] for k in ("obs", "mask", "prev", "start", "h_in", "q", "greedy")
        }

    def step(self, obs: np.ndarray, mask: np.ndarray, prev: np.ndarray, start: bool) -> np.ndarray:
        """Record one team step; return the executed actions (epsilon-greedy within ``mask``)."""
        if start:
            self.team.reset()
        h_in, q = self.team.step(obs.astype(np.float32), prev)
        greedy = masked_argmax(q, mask)  # (n_agents,)
        executed = greedy.copy()
        for i in range(len(executed)):
            if self.rng.random() < self.eps:
                executed[i] = self.rng.choice(np.flatnonzero(mask[i]))
        for key, value in (
            ("obs", obs.astype(np.float32)),
            ("mask", mask),
            ("prev", prev.copy()),
            ("start", np.asarray(start)),
            ("h_in", h_in),
            ("q", q),
            ("greedy", greedy),
        ):
            self.rows[key].append(value)
        return executed

    def finish(self, source: str) -> Recording:
        r = {k: np.stack(v) for k, v in self.rows.items()}
        return Recording(
            obs=r["obs"],
            mask=r["mask"].astype(bool),
            prev_action=r["prev"].astype(np.int64),
            start=r["start"].astype(bool),
            h_in=r["h_in"].astype(np.float32),
            q=r["q"].astype(np.float32),
            greedy=r["greedy"],
            sources=(source,),
        )


def record_synthetic(
    net: AgentNetwork,
    spec: EnvSpec,
    *,
    n_episodes: int = 6,
    episode_len: int = 12,
    seed: int = 0,
    epsilon: float = 0.3,
) -> Recording:
    """Deterministic random trajectories: Gaussian observations of mixed scale, random masks."""
    rng = np.random.default_rng(seed)
    rec = _Recorder(net, spec, rng, epsilon)
    n, d, a = spec.n_agents, spec.max_obs_dim, spec.max_n_actions
    own = np.stack([np.arange(a) < ag.n_actions for ag in spec.agents])  # (n_agents, A)
    for ep in range(n_episodes):
        prev = np.full(n, -1, dtype=np.int64)
        scale = (0.1, 1.0, 5.0)[ep % 3]
        for t in range(episode_len):
            obs = np.zeros((n, d), dtype=np.float32)
            for i, ag in enumerate(spec.agents):
                obs[i, : ag.obs_dim] = rng.normal(0.0, scale, ag.obs_dim)
            mask = _random_submask(own, rng, p_full=0.4)
            prev = rec.step(obs, mask, prev, start=t == 0)
    return rec.finish("synthetic")


def record_env(
    net: AgentNetwork,
    env: TeamEnv,
    *,
    n_episodes: int = 4,
    max_steps: int = 200,
    seed: int = 0,
    epsilon: float = 0.3,
) -> Recording:
    """Trajectories on the real environment: its observations, its masks (randomly narrowed)."""
    rng = np.random.default_rng(seed)
    spec = env.spec
    rec = _Recorder(net, spec, rng, epsilon)
    steps = 0
    for ep in range(n_episodes):
        ts = env.reset(seed=seed + ep)
        prev = np.full(spec.n_agents, -1, dtype=np.int64)
        t = 0
        while steps < max_steps:
            mask = _random_submask(ts.avail.astype(bool), rng, p_full=0.5)
            executed = rec.step(ts.obs, mask, prev, start=t == 0)
            result = env.step(executed)
            prev, t, steps = executed, t + 1, steps + 1
            if result.done or t >= spec.episode_limit:
                break
            ts = result.next
        if steps >= max_steps:
            break
    return rec.finish("env")


# ------------------------------------------------------------------------------- the gate
@dataclass(frozen=True)
class AgentReplay:
    """One agent's onnxruntime outputs on a recording (T steps)."""

    q: np.ndarray
    """float32 (T, n_actions)."""
    action: np.ndarray
    """int64 (T,)."""


def make_session(model_bytes: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(
        model_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


def replay_agent(
    session: ort.InferenceSession,
    rec: Recording,
    index: int,
    obs_dim: int,
    n_actions: int,
    recurrent: bool,
    uses_prev_action: bool,
    hidden_dim: int,
) -> AgentReplay:
    """Run agent ``index``'s slice of ``rec`` through ``session`` as a device would (batch 1)."""
    qs = np.zeros((rec.n_steps, n_actions), dtype=np.float32)
    acts = np.zeros(rec.n_steps, dtype=np.int64)
    h = np.zeros((1, hidden_dim), dtype=np.float32)
    for t in range(rec.n_steps):
        if rec.start[t]:
            h = np.zeros((1, hidden_dim), dtype=np.float32)
        feed = {
            TensorNames.OBS: rec.obs[t, index, :obs_dim][None],
            TensorNames.ACTION_MASK: rec.mask[t, index, :n_actions][None],
        }
        if uses_prev_action:
            feed[TensorNames.PREV_ACTION] = rec.prev_action[t, index : index + 1]
        if recurrent:
            feed[TensorNames.H_IN] = h
        out = session.run(None, feed)
        qs[t], acts[t] = out[0][0], out[1][0]
        if recurrent:
            h = out[2]
    return AgentReplay(qs, acts)


def check_parity(
    model_bytes: bytes,
    rec: Recording,
    index: int,
    spec: EnvSpec,
    net: AgentNetwork,
    *,
    q_atol: float = Q_ATOL,
    tie_tol: float = TIE_TOL,
    q_rtol: float = Q_RTOL,
) -> tuple[ParityFigures, AgentReplay]:
    """Gate agent ``index``'s graph on ``rec``; `ParityError` on any violation, figures otherwise."""
    agent = spec.agents[index]
    n_act, d = agent.n_actions, agent.obs_dim
    session = make_session(model_bytes)
    replay = replay_agent(
        session, rec, index, d, n_act, net.recurrent, net.use_prev_action, net.hidden_dim
    )
    q_torch = rec.q[:, index, :n_act]  # (T, n_actions)
    mask = rec.mask[:, index, :n_act]  # (T, n_actions)
    diff = np.abs(q_torch - replay.q)
    allowed = q_atol + q_rtol * np.abs(q_torch)  # (T, n_actions)
    max_diff = float(diff.max()) if diff.size else 0.0
    problems: list[str] = []
    if not np.isfinite(replay.q).all():
        problems.append("onnxruntime produced non-finite Q-values")
    excess = diff - allowed
    if not (excess <= 0).all():
        t, a = (int(x) for x in np.unravel_index(np.argmax(excess), excess.shape))
        problems.append(
            f"Q-values differ by {diff[t, a]:.3g} > {allowed[t, a]:.3g} (= {q_atol:g} + "
            f"{q_rtol:g} x |Q|) at step {t}, action {a}: torch {q_torch[t].tolist()}, "
            f"onnx {replay.q[t].tolist()}"
        )
    own_argmax = masked_argmax(replay.q, mask)
    if not np.array_equal(own_argmax, replay.action):
        t = int(np.flatnonzero(own_argmax != replay.action)[0])
        problems.append(
            f"the graph's action {int(replay.action[t])} is not the masked argmax "
            f"{int(own_argmax[t])} of its own Q-values at step {t}"
        )
    if not mask[np.arange(rec.n_steps), replay.action].all():
        problems.append("the graph chose a masked-out action")
    torch_greedy = rec.greedy[:, index]
    differ = np.flatnonzero(torch_greedy != replay.action)
    rows = np.arange(rec.n_steps)
    gaps = np.abs(q_torch[rows, torch_greedy] - q_torch[rows, replay.action])
    tie_slack = tie_tol + 2 * q_rtol * np.abs(q_torch[rows, torch_greedy])  # (T,)
    real = [int(t) for t in differ if gaps[t] >= tie_slack[t]]
    if real:
        t = real[0]
        problems.append(
            f"greedy actions differ at {len(real)} steps beyond near-ties (first: step {t}, "
            f"torch {int(torch_greedy[t])}, onnx {int(replay.action[t])}, Q gap {gaps[t]:.3g})"
        )
    # The dynamic batch dimension: every step at once, torch's entering states fed in.
    feed = {
        TensorNames.OBS: np.ascontiguousarray(rec.obs[:, index, :d]),
        TensorNames.ACTION_MASK: np.ascontiguousarray(mask),
    }
    if net.use_prev_action:
        feed[TensorNames.PREV_ACTION] = np.ascontiguousarray(rec.prev_action[:, index])
    if net.recurrent:
        feed[TensorNames.H_IN] = np.ascontiguousarray(rec.h_in[:, index])
    batched = session.run(None, feed)[0]
    batch_abs = np.abs(batched - q_torch)
    batch_diff = float(batch_abs.max()) if batched.size else 0.0
    if not (batch_abs <= allowed).all():
        problems.append(
            f"batched Q-values differ from torch by up to {batch_diff:.3g}, beyond "
            f"{q_atol:g} + {q_rtol:g} x |Q|"
        )
    if problems:
        raise ParityError(
            f"parity gate failed for agent {agent.agent_id!r} on {rec.n_steps} recorded steps: "
            + "; ".join(problems)
            + ". No artifact was written."
        )
    figures = ParityFigures(
        n_episodes=rec.n_episodes,
        n_steps=rec.n_steps,
        max_abs_q_diff=max(max_diff, batch_diff),
        near_ties=len(differ),
        q_atol=q_atol,
        tie_tol=tie_tol,
        q_rtol=q_rtol,
        sources=rec.sources,
    )
    return figures, replay
