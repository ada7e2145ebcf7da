"""The learner: one TD update of the agent networks (and mixer) on a batch of replayed episodes.

Faithful to pymarl's ``QLearner`` (Rashid et al. 2018, QMIX, section 4 and appendix):

    Q_tot(t) = mixer([Q_i(o_i(t), a_i(t))]_i, s(t))
    y(t)     = r(t) + gamma * (1 - terminated(t)) * Q_tot^target(t+1)
    loss     = sum_t filled(t) * (Q_tot(t) - y(t))^2 / sum_t filled(t)

- Target networks (agent and mixer) are hard copies refreshed every ``target_update_freq`` updates.
- Double Q (van Hasselt et al. 2016): the online agent networks pick argmax_a Q_i(t+1) among the
  *available* actions, the target networks evaluate it. Without double Q the target is the max of the
  target utilities over available actions. Unavailable actions never enter a target.
- Masks: ``filled`` removes padding and everything after a real terminal. Truncation (the time limit
  or the env's own cut) is not termination: the step after the last one is stored and bootstrapped.
- Agents that are absent (have left the episode, ``alive`` False): their utilities are set to zero
  before mixing, both for the chosen Q at t and for the target at t+1, so an absent agent's network
  output never leaks into Q_tot (the mixer sees the same constant input whatever the network says).
- IQL (no mixer): every agent does its own TD on the team reward; an agent's loss counts only the
  steps where it is alive, and its bootstrap ends when it leaves.
- ``standardise_rewards`` (EPyMARL's option, on in its QMIX config): rewards enter the TD target as
  (r - mean) / std with the running statistics of every reward collected so far. It keeps the
  value scale small under bootstrapped time limits, where Q otherwise drifts and diverges.
- Non-finite guard: a NaN or infinite loss or gradient norm stops the run at once
  (`NonFiniteLossError`, before the optimizer step, so the weights stay those of the last good
  update). There is no skip-and-continue: the env's inputs are checked finite before replay, so a
  non-finite loss means the values themselves have diverged, and skipping batches would only delay
  the stop while the targets keep drifting.
- GRU agents are unrolled over the whole episode from a zero hidden state at t = 0 (pymarl's burn-in
  from the episode start; `AgentNetwork.unroll`, in torch's fused GRU kernel when the weights are
  shared); MLP agents evaluate all steps in one batched forward.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .errors import CheckpointError, NonFiniteLossError
from .flat_params import FlatParameters, flatten_optimizer_state
from .networks import AgentNetwork
from .replay import EpisodeBatch


class TensorBatch:
    """An `EpisodeBatch` as torch tensors (zero-copy from numpy), with previous actions added."""

    def __init__(self, b: EpisodeBatch) -> None:
        self.obs = torch.from_numpy(np.ascontiguousarray(b.obs))  # (B, T+1, n, obs_dim)
        self.state = torch.from_numpy(np.ascontiguousarray(b.state))  # (B, T+1, state_dim)
        self.avail = torch.from_numpy(np.ascontiguousarray(b.avail))  # (B, T+1, n, A)
        self.alive = torch.from_numpy(np.ascontiguousarray(b.alive))  # (B, T+1, n)
        self.actions = torch.from_numpy(np.ascontiguousarray(b.actions))  # (B, T, n)
        self.reward = torch.from_numpy(np.ascontiguousarray(b.reward))  # (B, T)
        self.terminated = torch.from_numpy(np.ascontiguousarray(b.terminated))  # (B, T)
        self.filled = torch.from_numpy(np.ascontiguousarray(b.filled))  # (B, T)
        # The input at t is the action taken at t-1; -1 (no action) at t = 0.
        first = torch.full_like(self.actions[:, :1], -1)
        self.prev_actions = torch.cat([first, self.actions], dim=1)  # (B, T+1, n)


def unroll(net: AgentNetwork, obs: torch.Tensor, prev_actions: torch.Tensor) -> torch.Tensor:
    """Q-values for every step of a batch of episodes -> (B, T+1, n, A).

    ``obs`` (B, T+1, n, obs_dim); ``prev_actions`` (B, T+1, n). Recurrent nets start from zeros.
    """
    return net.unroll(obs, prev_actions if net.use_prev_action else None)


def masked_argmax(q: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """argmax over available actions (ties -> lowest index, as torch.argmax). (..., A) -> (...)."""
    return q.masked_fill(~avail, -torch.inf).argmax(dim=-1)


class RunningMeanStd:
    """Running mean and variance of a stream of scalars (Chan et al.'s parallel update), JSON-able."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: np.ndarray) -> None:
        n = int(values.size)
        if n == 0:
            return
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = (
            int(state["count"]),
            float(state["mean"]),
            float(state["m2"]),
        )


class Learner:
    """Owns the online and target networks, the optimizer and the update counter."""

    def __init__(
        self, config: TrainConfig, agent_net: AgentNetwork, mixer: nn.Module | None
    ) -> None:
        self.config = config
        self.agent_net = agent_net
        self.mixer = mixer
        self.target_agent_net = copy.deepcopy(agent_net)
        self.target_mixer = copy.deepcopy(mixer)
        for p in self._target_params():
            p.requires_grad_(False)
        # Every trainable weight as a view of one flat tensor per network (`flat_params`): the
        # optimizer, the gradient norm and zeroing then cost one tensor operation, not twenty.
        self.flat = FlatParameters([agent_net] if mixer is None else [agent_net, mixer])
        self.params = self.flat.tensors
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "adam":
            # fused: one kernel for all parameters (measurably faster for these small networks).
            self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, fused=True)
        elif config.optimizer == "radam":
            # RAdam (Liu et al. 2020), JaxMARL's optimizer: Adam with its early variance rectified.
            self.optimizer = torch.optim.RAdam(self.params, lr=config.learning_rate, foreach=True)
        else:
            self.optimizer = torch.optim.RMSprop(
                self.params, lr=config.learning_rate, alpha=config.optim_alpha, eps=config.optim_eps
            )
        self.updates = 0
        self.last_finite_loss: float | None = None
        """The loss of the last applied update (None before the first; not checkpointed)."""
        self.reward_stats = RunningMeanStd()  # fed by the trainer with every collected reward

    def _target_params(self) -> list[nn.Parameter]:
        ps = list(self.target_agent_net.parameters())
        if self.target_mixer is not None:
            ps += list(self.target_mixer.parameters())
        return ps

    def set_learning_rate(self, lr: float) -> None:
        """Set the step size of every parameter group (the trainer's LR schedule calls this)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def update_targets(self) -> None:
        """Hard copy of the online networks into the targets."""
        self.target_agent_net.load_state_dict(self.agent_net.state_dict())
        if self.mixer is not None and self.target_mixer is not None:
            self.target_mixer.load_state_dict(self.mixer.state_dict())

    def _target_q(self, b: TensorBatch) -> torch.Tensor:
        """Target utilities of steps 1..T -> (B, T, n, A) (a feed-forward net skips step 0)."""
        if self.target_agent_net.recurrent:
            return unroll(self.target_agent_net, b.obs, b.prev_actions)[:, 1:]
        return unroll(self.target_agent_net, b.obs[:, 1:], b.prev_actions[:, 1:])

    def loss(self, b: TensorBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The masked TD loss of one batch and detached diagnostics."""
        cfg = self.config
        q = unroll(self.agent_net, b.obs, b.prev_actions)  # (B, T+1, n, A)
        with torch.no_grad():
            target_q = self._target_q(b)  # (B, T, n, A): steps 1..T only
            avail_next = b.avail[:, 1:]  # (B, T, n, A)
            # Padding and absent agents may have no available action; any choice is masked out later.
            avail_next = avail_next | ~avail_next.any(dim=-1, keepdim=True)
            if cfg.double_q:
                a_star = masked_argmax(q[:, 1:].detach(), avail_next)  # (B, T, n)
                next_q = target_q.gather(-1, a_star.unsqueeze(-1)).squeeze(-1)  # (B, T, n)
            else:
                next_q = target_q.masked_fill(~avail_next, -torch.inf).amax(dim=-1)
            alive_next = b.alive[:, 1:].to(q.dtype)  # (B, T, n)
            next_q = next_q * alive_next

        chosen = q[:, :-1].gather(-1, b.actions.unsqueeze(-1)).squeeze(-1)  # (B, T, n)
        alive = b.alive[:, :-1].to(q.dtype)  # (B, T, n)
        chosen = chosen * alive
        not_done = 1.0 - b.terminated.to(q.dtype)  # (B, T)
        filled = b.filled.to(q.dtype)  # (B, T)
        reward = b.reward  # (B, T)
        if cfg.standardise_rewards:
            stats = self.reward_stats
            reward = (reward - stats.mean) / max(stats.std, 1e-6)

        if self.mixer is None:  # IQL: per-agent TD on the team reward
            y = reward.unsqueeze(-1) + cfg.gamma * not_done.unsqueeze(-1) * next_q  # (B, T, n)
            mask = filled.unsqueeze(-1) * alive  # (B, T, n)
            q_eval = chosen
        else:
            assert self.target_mixer is not None
            q_eval = self.mixer(chosen, b.state[:, :-1])  # (B, T)
            with torch.no_grad():
                next_tot = self.target_mixer(next_q, b.state[:, 1:])  # (B, T)
            y = reward + cfg.gamma * not_done * next_tot  # (B, T)
            mask = filled
        td = (q_eval - y) * mask
        n_valid = mask.sum().clamp(min=1.0)
        loss = (td**2).sum() / n_valid
        info = {
            "td_error_abs": td.detach().abs().sum() / n_valid,
            "q_taken_mean": (q_eval.detach() * mask).sum() / n_valid,
            "target_mean": (y * mask).sum() / n_valid,
        }
        return loss, info

    def update(self, batch: EpisodeBatch) -> dict[str, float]:
        """One gradient step on ``batch``; returns train/ metrics (floats)."""
        b = TensorBatch(batch)
        loss, info = self.loss(b)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise self._non_finite("loss", loss_value)
        self.flat.zero_grad()
        loss.backward()
        if self.config.grad_norm_clip > 0:
            grad_norm = self.flat.clip_grad_norm(self.config.grad_norm_clip)
        else:
            grad_norm = self.flat.grad_norm()
        grad_norm_value = float(grad_norm)
        if not math.isfinite(grad_norm_value):
            raise self._non_finite("grad_norm", grad_norm_value)
        self.optimizer.step()
        self.updates += 1
        self.last_finite_loss = loss_value
        if self.updates % self.config.target_update_freq == 0:
            self.update_targets()
        out = {k: float(v) for k, v in info.items()}
        out["loss"] = loss_value
        out["grad_norm"] = grad_norm_value
        return out

    def _non_finite(self, quantity: str, value: float) -> NonFiniteLossError:
        cfg = self.config
        update = self.updates + 1
        what = "TD loss" if quantity == "loss" else "gradient norm"
        last = (
            f"the last finite loss was {self.last_finite_loss:.6g} at update {self.updates}"
            if self.last_finite_loss is not None
            else "no update of this session had been applied yet"
        )
        clip = (
            f"gradient clipping at grad_norm_clip={cfg.grad_norm_clip:g}"
            if cfg.grad_norm_clip > 0
            else "no gradient clipping (grad_norm_clip=0; 10 is pymarl's)"
        )
        return NonFiniteLossError(
            f"update {update}: the {what} is {value} ({last}); the update was not applied and the "
            f"run stopped. The env's observations, states and rewards were checked finite, so the "
            f"values diverged. Usual causes: a learning rate too high for this problem "
            f"(learning_rate={cfg.learning_rate:g}: try 3-10x lower); rewards on a large scale "
            f"(standardise_rewards={cfg.standardise_rewards}: turn it on, or scale the env's "
            f"rewards); gamma close to 1 with bootstrapped time limits (gamma={cfg.gamma:g}: a "
            f"truncated episode bootstraps, so Q can grow towards max reward / (1 - gamma) = "
            f"{1.0 / max(1.0 - cfg.gamma, 1e-12):.4g} x the reward scale); {clip}. Resume from "
            f"the last good checkpoint with a lower --learning-rate",
            update=update,
            quantity=quantity,
            last_finite_loss=self.last_finite_loss,
        )

    # --- persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (loadable with torch.load(weights_only=True))."""
        sd: dict[str, Any] = {
            "agent_net": self.agent_net.state_dict(),
            "target_agent_net": self.target_agent_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        if self.mixer is not None and self.target_mixer is not None:
            sd["mixer"] = self.mixer.state_dict()
            sd["target_mixer"] = self.target_mixer.state_dict()
        return sd

    def load_state_dict(self, sd: dict[str, Any], updates: int) -> None:
        self.agent_net.load_state_dict(sd["agent_net"])
        self.target_agent_net.load_state_dict(sd["target_agent_net"])
        if self.mixer is not None and self.target_mixer is not None:
            self.mixer.load_state_dict(sd["mixer"])
            self.target_mixer.load_state_dict(sd["target_mixer"])
        try:
            optimizer_state = flatten_optimizer_state(sd["optimizer"], self.flat.sizes)
        except ValueError as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit these networks: {e}; resume with "
                "the run's own config"
            ) from e
        self.optimizer.load_state_dict(optimizer_state)
        for group in self.optimizer.param_groups:  # a resume may lower the learning rate
            group["lr"] = self.config.learning_rate
        self.updates = updates
