"""Finite-number guards: what the env hands the trainer, and every tensor a checkpoint holds.

A NaN or infinity that reaches replay turns every Q-value it touches into NaN within a few updates,
and from there every later checkpoint would hold a poisoned policy. So the values are checked where
they enter:

- `check_team_arrays`: observations, global states and rewards of a vector step (or of the first
  views after a reset), before the collector writes them anywhere. A failure names the env id, the
  agent, the field, the step in the episode and the episode's reset seed (`NonFiniteInputError`).
  The check is always on: it costs one ``np.isfinite`` pass over a few small arrays per vector step
  (bench/train_speed.py measures it), and an input with NaN or inf cannot be trained on anyway: the
  network's outputs would be non-finite too. An env that legitimately reports inf (a range sensor's
  "no return") must map it to a finite number (its maximum range) in the env or a wrapper.
- `non_finite_tensors`: the names of the floating tensors of a nested state dict that hold a NaN
  or inf (checkpoints are refused on any; the exporter refuses such weights too).

The learner checks its own loss and gradient norm (`qmix_edge.train.learner`). Numpy and torch only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .errors import NonFiniteInputError


def _value_name(x: float) -> str:
    if np.isnan(x):
        return "NaN"
    return "+inf" if x > 0 else "-inf"


def check_team_arrays(
    env_id: str,
    agent_ids: Sequence[str],
    *,
    obs: np.ndarray,
    state: np.ndarray,
    steps: np.ndarray,
    seeds: np.ndarray,
    reward: np.ndarray | None = None,
    agent_rewards: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    context: str = "training",
) -> None:
    """Raise `NonFiniteInputError` at the first NaN or inf in a batch of env views.

    ``obs`` (E, n, obs_dim), ``state`` (E, state_dim), ``reward`` (E,) and ``agent_rewards``
    (E, n), one row per env; ``steps`` (E,) is each env's step in its episode (0 after a reset)
    and ``seeds`` (E,) its episode's reset seed. ``rows`` (E,) are the envs' indices in the vector
    env, for the message (default 0..E-1).
    """
    # The common case costs one vectorised pass per array; the search below runs only on failure.
    if (
        np.isfinite(obs).all()
        and np.isfinite(state).all()
        and (reward is None or np.isfinite(reward).all())
    ):
        return
    n_rows = obs.shape[0]
    env_rows = np.arange(n_rows) if rows is None else np.asarray(rows)
    for r in range(n_rows):
        agent: str | None = None
        bad_obs = np.flatnonzero(~np.isfinite(obs[r]).all(axis=-1))
        if bad_obs.size:
            i = int(bad_obs[0])
            agent = agent_ids[i]
            k = int(np.flatnonzero(~np.isfinite(obs[r, i]))[0])
            field, what = "observation", f"{_value_name(float(obs[r, i, k]))} observation[{k}]"
        elif not np.isfinite(state[r]).all():
            k = int(np.flatnonzero(~np.isfinite(state[r]))[0])
            field, what = "state", f"{_value_name(float(state[r, k]))} global state[{k}]"
        elif reward is not None and not np.isfinite(reward[r]):
            field, what = "reward", f"{_value_name(float(reward[r]))} team reward"
            if agent_rewards is not None:
                bad = np.flatnonzero(~np.isfinite(agent_rewards[r]))
                if bad.size:
                    agent = agent_ids[int(bad[0])]
                    what = f"{_value_name(float(agent_rewards[r, bad[0]]))} reward"
        else:
            continue
        step, seed = int(steps[r]), int(seeds[r])
        who = f" for agent {agent!r}" if agent is not None else ""
        when = "the reset" if step == 0 else f"step {step}"
        raise NonFiniteInputError(
            f"env {env_id!r} returned a {what}{who} at {when} of the episode with seed {seed} "
            f"({context} env {int(env_rows[r])}); the run stopped before the value reached the "
            f"replay buffer. Expected finite numbers: fix the env, or wrap it to replace or clip "
            f"NaN and inf (e.g. a range sensor's inf for 'no return'). To reproduce: reset the env "
            f"with seed={seed} and step it {step} times",
            env_id=env_id,
            agent=agent,
            field=field,
            step=step,
            seed=seed,
        )


def non_finite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Names (``a/b/c``) of the floating tensors in a nested dict/list that hold a NaN or inf."""
    out: list[str] = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            out.append(prefix or "<tensor>")
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            out += non_finite_tensors(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for k, v in enumerate(tree):
            out += non_finite_tensors(v, f"{prefix}/{k}" if prefix else str(k))
    return out


def describe_non_finite(t: torch.Tensor) -> str:
    """``3 of 64 values NaN, 1 inf`` for a floating tensor."""
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    parts = [f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    return f"{', '.join(parts)} of {t.numel()} values"
