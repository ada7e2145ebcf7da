"""The training configuration: one frozen dataclass, its validation, YAML loading and CLI flags.

`TrainConfig` is the single declaration of every training hyperparameter. Each field is declared
with `qmix_edge.common.settings.setting`: its default and a doc stating its unit (env steps,
episodes, transitions or learner updates), kept in the field's metadata, so the same declaration
gives the ``qmix-train`` flags and their ``--help`` text (`settings.docs`) without reading source
files. The mixer and agent-network choices come from `registry`. A run saves its resolved config as
``config.yaml`` (and ``config.json``) in the run directory, and a resumed run reads it back.

Units used throughout:
- *env step*: one step of one environment (one joint action of the team). ``n_envs`` environments
  stepped together advance the env-step counter by ``n_envs``.
- *episode*: one full episode of one environment (at most ``episode_limit`` env steps).
- *transition*: one env step stored in replay (the buffer keeps whole episodes).
- *update*: one gradient step of the learner on a batch of ``batch_size`` episodes.

Where each default comes from (seed = the project's original table; pymarl = the reference
implementation's ``default.yaml``/``qmix.yaml``; EPyMARL = its fork used as our speed baseline):

| field                   | default   | source and note                                                  |
|-------------------------|-----------|------------------------------------------------------------------|
| n_agents                | 3         | seed (used for Gymnasium team copies and scalable envs)          |
| hidden_dim              | 64        | seed; pymarl ``rnn_hidden_dim`` 64                                |
| mixing_embed_dim        | 32        | seed; pymarl 32                                                  |
| learning_rate           | 5e-4      | seed; pymarl ``lr`` 0.0005                                       |
| buffer_size             | 50_000    | seed, in transitions (pymarl counts 5000 *episodes*); stored as  |
|                         |           | buffer_size // episode_limit whole episodes (2000 on MPE, T=25)  |
| batch_size              | 32        | seed; pymarl 32 episodes                                         |
| gamma                   | 0.95      | CHANGED from the seed's (and pymarl's) 0.99: on simple_spread    |
|                         |           | with its bootstrapped 25-step time limit, 0.99 let Q_tot diverge |
|                         |           | (greedy -57 at 120k steps, then -73 by 600k, Q > 0 with all     |
|                         |           | rewards < 0); 0.95 reached -47.5 at 260k steps and kept rising   |
|                         |           | (bench/train_quality.py, seed 0, before standardise_rewards was  |
|                         |           | on). Pass gamma: 0.99 for the seed's value.                      |
| target_update_freq      | 200       | seed, in learner updates (pymarl: 200 episodes; EPyMARL does one |
|                         |           | update per episode, so the two agree)                            |
| epsilon_start/end       | 1.0/0.05  | seed; pymarl 1.0/0.05                                            |
| epsilon_decay_steps     | 5000      | seed, env steps (pymarl anneals over 50_000)                     |
| seed                    | 42        | seed                                                             |
| agent_network           | mlp       | seed (EPyMARL's MLP agent); ``gru`` = pymarl's rnn_agent         |
| hypernet_layers/embed   | 2 / 64    | pymarl and EPyMARL ``qmix.yaml``; 1 = the paper                  |
| double_q                | True      | pymarl                                                           |
| grad_norm_clip          | 10        | pymarl                                                           |
| optimizer               | adam      | EPyMARL (pymarl: RMSprop, alpha 0.99, eps 1e-5)                  |
| use_agent_id            | True      | pymarl ``obs_agent_id``                                          |
| use_prev_action         | False     | EPyMARL ``obs_last_action`` False (pymarl: True)                  |
| standardise_rewards     | True      | EPyMARL ``qmix.yaml`` ``standardise_rewards: True`` (pymarl: no) |
| updates_per_episode     | 1.0       | EPyMARL/pymarl: one update per episode collected                 |
| n_envs                  | 16        | ours: env steps/s with learning on simple_spread (2 cores): 4 ->  |
|                         |           | 1,710, 8 -> 2,320, 16 -> 3,470, 32 -> 3,790; the ratio of one    |
|                         |           | update per episode is kept whatever n_envs is                    |
| team_reward             | sum       | the project's issue: sum of the agents' rewards                  |
| eval_interval/episodes  | 20_000/32 | ours (pymarl: every 2000 steps, 20 episodes)                      |
| lr_schedule             | constant  | EPyMARL/pymarl (JaxMARL: linear decay to 0 over the run)          |
| lr_end / lr_decay_steps | 0 / None  | JaxMARL: to 0 over the whole run (None = total_timesteps)        |
| env_steps_per_update    | None      | EPyMARL: updates_per_episode 1 decides (JaxMARL: one update of 32 |
|                         |           | episodes per 208 env steps)                                      |
| vector                  | auto      | ours: a batched engine where one applies (simple_spread, VMAS),  |
|                         |           | else worker processes for costly envs, else in-process           |
| overlap                 | False     | ours: off keeps one process (the schedule of every run before);  |
|                         |           | the fast preset turns it on (collection and learning on 2 cores) |
| overlap_round_steps     | 8         | ours: 8 vector steps of 64 worlds = 512 env steps, 2-3 updates   |
|                         |           | per round at 208 env steps each: long enough that the learner's  |
|                         |           | rounds hide the collector's, short enough that the acting policy |
|                         |           | lags by at most 3 updates (JaxMARL's lag: 1 update, 208 steps)   |

Presets (`PRESETS`, ``qmix-train --preset NAME``; defaults < preset < YAML file < flags):

- ``fast``: the learner for the batched simple_spread, after JaxMARL's QMIX (``qmix_rnn``,
  ``ql_rnn_mpe``): RAdam, learning rate 0.005 decayed linearly to 0 over the run, gamma 0.9, one
  update of 32 episodes per 208 env steps, learning from 400 episodes (10k env steps), 5000
  episodes of replay, gradient clip 25. Ours, measured (bench/README.md; a run's return at a
  given env step does not depend on the machine's load, so these compare cleanly):
  hard target copies every 100 updates, not 200 (seed 0: -29.9 against -37.4 at 3M env steps;
  -40 first at 1.6-1.9M env steps on seeds 0, 1, 2); collection in its own process overlapping
  the learner (``overlap``, rounds of 8 vector steps); 64 worlds (collection alone then runs
  about twice the env steps the learner keeps up with, so the learner bounds the run);
  checkpoints every 500k env steps (one writes the 5000-episode replay, about 60 MB); greedy
  evaluation every 100k env steps. Kept from our defaults on purpose, each compared on seed 0 by
  env steps with 200-update target copies: an MLP agent rather than a GRU (a GRU update costs
  about 3x an MLP update on this CPU, even in torch's fused kernel), standardised rewards (off:
  -48.0 against -39.8 at 2.3M env steps), 2-layer hypernetworks (1 layer: 22 % cheaper updates,
  but -68 against -40 at 2.3M env steps), epsilon over 100k env steps (JaxMARL: 10 % of its
  10M-step run).
- ``epymarl``: EPyMARL's own QMIX/VDN settings for its Gymnasium robot tasks (lbforaging, rware),
  read from its repository (uoe-agents/epymarl, commit cbc38c0: ``src/config/default.yaml``,
  ``src/config/algs/qmix.yaml`` and ``vdn.yaml``, ``src/config/envs/gymma.yaml``):

  | field                   | epymarl   | EPyMARL key and value                                  |
  |-------------------------|-----------|--------------------------------------------------------|
  | gamma                   | 0.99      | default.yaml ``gamma: 0.99``                           |
  | learning_rate           | 5e-4      | default.yaml ``lr: 0.0005`` (Adam: q_learner.py)       |
  | batch_size              | 32        | default.yaml ``batch_size: 32`` episodes               |
  | buffer_size             | 250_000   | qmix.yaml ``buffer_size: 5000`` episodes x 50 steps    |
  |                         |           | (lbforaging's limit); rware's 500-step episodes get    |
  |                         |           | 500 (EPyMARL keeps 5000: 10x the memory)               |
  | target_update_freq      | 200       | qmix.yaml ``target_update_interval_or_tau: 200``       |
  |                         |           | episodes = updates at one update per episode           |
  | epsilon start/end/decay | 1/.05/50k | qmix.yaml ``epsilon_anneal_time: 50000``               |
  | standardise_rewards     | True      | qmix.yaml ``standardise_rewards: True``                |
  | agent_network, hidden   | mlp, 64   | qmix.yaml ``use_rnn: False``; ``hidden_dim: 64``       |
  | use_agent_id / prev act | True/False| qmix.yaml ``obs_agent_id: True``, ``obs_last_action``  |
  | mixer widths            | 32, 2, 64 | qmix.yaml mixing_embed_dim, hypernet_layers/_embed     |
  | double_q, grad clip     | True, 10  | qmix.yaml ``double_q``; default.yaml grad_norm_clip    |
  | updates_per_episode     | 1         | the episode runner: one train step per episode         |
  | eval_interval/episodes  | 50k / 100 | gymma.yaml ``test_interval``, ``test_nepisode``        |
  | n_envs, vector          | 8, sync   | ours (EPyMARL steps one env): 8 in-process envs keep   |
  |                         |           | its one update per episode and are the fastest engine  |
  |                         |           | for lbforaging on 2 shared cores (bench/README.md)     |

  The episode limit is the env's registration (EPyMARL's ``time_limit``: 50 for lbforaging, 500
  for rware). The VDN settings are the same but the mixer.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from qmix_edge.common.settings import setting
from qmix_edge.envs.errors import did_you_mean

from .errors import ConfigError
from .registry import AGENT_NETWORKS, ALGORITHMS, MIXERS, choices_help

VectorKind = Literal["auto", "batched", "sync", "subprocess", "ray"]

REGISTRY_CHOICES: dict[str, Mapping[str, Any]] = {
    "algo": ALGORITHMS,
    "agent_network": AGENT_NETWORKS,
}
"""Fields whose choices are the names of a registry (`registry`), not a ``Literal``."""

DEFAULT_ENV = "simple_spread"

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "optimizer": "radam",
        "learning_rate": 0.005,
        "lr_schedule": "linear",
        "lr_end": 0.0,
        "gamma": 0.9,
        "batch_size": 32,
        "env_steps_per_update": 208,
        "learning_starts": 400,
        "buffer_size": 125_000,
        "grad_norm_clip": 25.0,
        "target_update_freq": 100,
        "epsilon_decay_steps": 100_000,
        "n_envs": 64,
        "overlap": True,
        "overlap_round_steps": 8,
        "eval_interval": 100_000,
        "checkpoint_interval": 500_000,
    },
    "epymarl": {
        "gamma": 0.99,
        "learning_rate": 5e-4,
        "optimizer": "adam",
        "batch_size": 32,
        "buffer_size": 250_000,
        "target_update_freq": 200,
        "epsilon_start": 1.0,
        "epsilon_end": 0.05,
        "epsilon_decay_steps": 50_000,
        "standardise_rewards": True,
        "agent_network": "mlp",
        "hidden_dim": 64,
        "use_agent_id": True,
        "use_prev_action": False,
        "mixing_embed_dim": 32,
        "hypernet_layers": 2,
        "hypernet_embed": 64,
        "double_q": True,
        "grad_norm_clip": 10.0,
        "updates_per_episode": 1.0,
        "eval_interval": 50_000,
        "eval_episodes": 100,
        "n_envs": 8,
        "vector": "sync",
    },
}
"""Named sets of config values (see the module docstring); a preset is a layer, not a field."""


def preset_values(name: str) -> dict[str, Any]:
    """The config values of preset ``name`` (a copy)."""
    try:
        return dict(PRESETS[name])
    except KeyError as e:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from e


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a QMIX / VDN / IQL training run (see the module table for sources)."""

    # --- algorithm and environment -------------------------------------------------------------
    algo: str = setting(
        "qmix",
        "Algorithm, by the mixer it trains with: "
        + ", ".join(f"{a} ({MIXERS[m].summary})" for a, m in ALGORITHMS.items())
        + "; without a mixer each agent does its own TD on the team reward.",
        choices=ALGORITHMS,
    )
    env: str = setting(
        DEFAULT_ENV,
        "Environment id: a short name (simple_spread), module:attribute, a built-in, or a Gymnasium id.",
    )
    env_kwargs: Mapping[str, Any] = setting(
        doc="Keyword arguments passed to the environment constructor.", default_factory=dict
    )
    n_agents: int = setting(
        3, "Number of agents, for environments whose team size is a parameter (Gymnasium copies)."
    )
    team_reward: Literal["sum", "mean"] = setting(
        "sum", "How the agents' rewards combine into the team reward."
    )
    episode_limit: int | None = setting(
        None,
        "Maximum env steps per episode (truncation, bootstrapped); None = the environment's own.",
    )

    # --- agent network and mixer ----------------------------------------------------------------
    agent_network: str = setting(
        "mlp",
        f"Agent utility network: {choices_help(AGENT_NETWORKS)}.",
        choices=AGENT_NETWORKS,
    )
    hidden_dim: int = setting(64, "Width of the agent network's hidden layers (units).")
    share_params: bool = setting(
        True, "One set of agent-network weights for all agents (True) or one per agent."
    )
    use_prev_action: bool = setting(
        False, "Feed each agent its own previous action (one-hot) as input."
    )
    use_agent_id: bool = setting(True, "Feed each agent its one-hot agent index as input.")
    mixing_embed_dim: int = setting(32, "Width of the QMIX mixing network's hidden layer (units).")
    hypernet_layers: Literal[1, 2] = setting(
        2, "Depth of the QMIX hypernetworks producing mixing weights: 1 (the paper) or 2 (pymarl)."
    )
    hypernet_embed: int = setting(64, "Hidden width of 2-layer hypernetworks (units).")

    # --- learner -----------------------------------------------------------------------------------
    learning_rate: float = setting(
        5e-4, "Optimizer step size (at env step 0 when lr_schedule is linear)."
    )
    lr_schedule: Literal["constant", "linear"] = setting(
        "constant",
        "constant, or linear: decays from learning_rate to lr_end over lr_decay_steps env steps.",
    )
    lr_end: float = setting(0.0, "Learning rate at the end of a linear decay (JaxMARL: 0).")
    lr_decay_steps: int | None = setting(
        None, "Env steps of the linear decay; None = the total_timesteps of the train() call."
    )
    optimizer: Literal["adam", "radam", "rmsprop"] = setting(
        "adam",
        "Optimizer: adam (EPyMARL), radam (JaxMARL) or rmsprop (pymarl; optim_alpha, optim_eps).",
    )
    optim_alpha: float = setting(0.99, "RMSprop smoothing constant (pymarl); unused by adam.")
    optim_eps: float = setting(
        1e-5, "RMSprop epsilon (pymarl); unused by adam (which keeps torch's 1e-8)."
    )
    gamma: float = setting(
        0.95,
        "Discount factor per env step, in [0, 1] (the seed's 0.99 diverged on simple_spread; see table).",
    )
    batch_size: int = setting(32, "Episodes per learner update.")
    buffer_size: int = setting(
        50_000,
        "Replay capacity in transitions (env steps); stored as buffer_size // episode_limit episodes.",
    )
    target_update_freq: int = setting(
        200, "Learner updates between hard copies of the online networks into the target networks."
    )
    double_q: bool = setting(
        True,
        "Double Q-learning: online networks pick the next action, target networks evaluate it.",
    )
    grad_norm_clip: float = setting(
        10.0, "Maximum global gradient norm per update (0 disables clipping)."
    )
    updates_per_episode: float = setting(
        1.0,
        "Learner updates per episode collected (EPyMARL: 1); fractions accumulate across episodes.",
    )
    env_steps_per_update: int | None = setting(
        None,
        "Update ratio in env steps: one learner update per this many env steps collected (JaxMARL: 208); when set it replaces updates_per_episode. None = updates_per_episode decides.",
    )
    standardise_rewards: bool = setting(
        True,
        "Standardise rewards in TD targets with running mean/std of collected rewards (EPyMARL).",
    )
    learning_starts: int | None = setting(
        None, "Episodes in replay before learning starts; None = batch_size."
    )

    # --- exploration and collection -------------------------------------------------------------
    epsilon_start: float = setting(1.0, "Exploration rate at env step 0, in [0, 1].")
    epsilon_end: float = setting(
        0.05, "Exploration rate after epsilon_decay_steps env steps, in [0, 1]."
    )
    epsilon_decay_steps: int = setting(
        5000, "Env steps over which epsilon decays linearly from epsilon_start to epsilon_end."
    )
    n_envs: int = setting(
        16, "Training environments stepped together (one batched forward per vector step)."
    )
    overlap: bool = setting(
        False,
        "Collect in a process of its own while the learner updates, on two cores: the envs step in rounds of overlap_round_steps vector steps with the agent network's weights of the round's start, so the acting policy lags the learner by at most one round's updates (rollout/policy_lag). Deterministic per seed, and a killed run resumes exactly, but not the same run as with overlap off. Needs an in-process engine (vector batched, sync or auto).",
    )
    overlap_round_steps: int = setting(
        8,
        "Vector steps per collection round when overlap is on: the bound on how stale the acting policy may be, and how often the two processes meet.",
    )
    vector: VectorKind = setting(
        "auto",
        "Engine that steps the training envs: batched (simple_spread's numpy array engine, equal to mpe2's env step for step; for vmas: ids VMAS's own batched worlds), sync (the env's own objects in this process), subprocess (the env's own objects in a worker process), ray (Ray actors on the running Ray or a local one, one CPU each; needs qmix-edge[ray]), or auto: batched where it applies, else subprocess for costly envs, else sync. The run's config.yaml records the engine that stepped; greedy evaluation always steps the env's own implementation (mpe2 for simple_spread).",
    )

    # --- evaluation, logging, checkpoints -------------------------------------------------------
    eval_interval: int = setting(
        20_000,
        "Env steps between greedy evaluations (a final one always runs at the end of training).",
    )
    eval_episodes: int = setting(
        32, "Greedy evaluation episodes per evaluation (fixed seeds, separate environments)."
    )
    log_interval: int = setting(5_000, "Env steps between rollout/train metric records.")
    checkpoint_interval: int = setting(
        50_000,
        "Env steps between checkpoints (a final one is always written; 0 = only the final one).",
    )
    seed: int = setting(
        42,
        "Seed of every random stream of the run (networks, exploration, env resets, replay sampling).",
    )
    torch_threads: int = setting(
        1, "torch intra-op threads (0 = torch's default); 1 is fastest for these small networks."
    )

    def __post_init__(self) -> None:
        _check_choice("algo", self.algo)
        _check_choice("team_reward", self.team_reward)
        _check_choice("agent_network", self.agent_network)
        _check_choice("hypernet_layers", self.hypernet_layers)
        _check_choice("optimizer", self.optimizer)
        _check_choice("lr_schedule", self.lr_schedule)
        _check_choice("vector", self.vector)
        if not isinstance(self.env, str) or not self.env:
            raise ConfigError(f"env must be a non-empty environment id; found {self.env!r}")
        if not isinstance(self.env_kwargs, Mapping):
            raise ConfigError(f"env_kwargs must be a mapping; found {self.env_kwargs!r}")
        _check_int("n_agents", self.n_agents, 1)
        if self.episode_limit is not None:
            _check_int("episode_limit", self.episode_limit, 1)
        for name in (
            "hidden_dim",
            "mixing_embed_dim",
            "hypernet_embed",
            "batch_size",
            "n_envs",
            "overlap_round_steps",
        ):
            _check_int(name, getattr(self, name), 1)
        _check_int("buffer_size", self.buffer_size, 1)
        _check_int("target_update_freq", self.target_update_freq, 1)
        _check_int("epsilon_decay_steps", self.epsilon_decay_steps, 0)
        _check_int("eval_interval", self.eval_interval, 1)
        _check_int("eval_episodes", self.eval_episodes, 1)
        _check_int("log_interval", self.log_interval, 1)
        _check_int("checkpoint_interval", self.checkpoint_interval, 0)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        _check_int("torch_threads", self.torch_threads, 0, 1024)
        if self.learning_starts is not None:
            _check_int("learning_starts", self.learning_starts, 1)
        if self.env_steps_per_update is not None:
            _check_int("env_steps_per_update", self.env_steps_per_update, 1)
        if self.lr_decay_steps is not None:
            _check_int("lr_decay_steps", self.lr_decay_steps, 1)
        _check_float("lr_end", self.lr_end, 0.0, 1.0)
        _check_float("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _check_float("gamma", self.gamma, 0.0, 1.0)
        _check_float("epsilon_start", self.epsilon_start, 0.0, 1.0)
        _check_float("epsilon_end", self.epsilon_end, 0.0, 1.0)
        _check_float("grad_norm_clip", self.grad_norm_clip, 0.0, math.inf)
        _check_float("updates_per_episode", self.updates_per_episode, 0.0, 1000.0)
        _check_float("optim_alpha", self.optim_alpha, 0.0, 1.0)
        _check_float("optim_eps", self.optim_eps, 0.0, 1.0, low_open=True)

    # --- derived values ---------------------------------------------------------------------------
    @property
    def mixer(self) -> str:
        """The mixer kind of `algo`: qmix, vdn or none (IQL)."""
        return ALGORITHMS[self.algo]

    @property
    def min_episodes_to_learn(self) -> int:
        """Episodes in replay before the first update (at least one batch)."""
        return max(self.batch_size, self.learning_starts or self.batch_size)

    def buffer_episodes(self, episode_limit: int) -> int:
        """Replay capacity in episodes for episodes of at most ``episode_limit`` env steps."""
        episodes = self.buffer_size // episode_limit
        if episodes < self.min_episodes_to_learn:
            raise ConfigError(
                f"buffer_size={self.buffer_size} transitions holds only {episodes} episodes of "
                f"{episode_limit} steps, fewer than the {self.min_episodes_to_learn} needed to learn "
                f"(batch_size/learning_starts); set buffer_size >= "
                f"{self.min_episodes_to_learn * episode_limit}"
            )
        return episodes

    def epsilon(self, env_steps: int) -> float:
        """Exploration rate after ``env_steps`` env steps (linear decay, then constant)."""
        if self.epsilon_decay_steps == 0:
            return self.epsilon_end
        frac = min(1.0, env_steps / self.epsilon_decay_steps)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def learning_rate_at(self, env_steps: int, total_timesteps: int) -> float:
        """The learning rate after ``env_steps`` env steps of a run of ``total_timesteps``."""
        if self.lr_schedule == "constant":
            return self.learning_rate
        span = self.lr_decay_steps or total_timesteps
        frac = min(1.0, env_steps / max(span, 1))
        return self.learning_rate + frac * (self.lr_end - self.learning_rate)

    # --- conversion -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict of every field (the resolved config)."""
        d = dataclasses.asdict(self)
        d["env_kwargs"] = dict(self.env_kwargs)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        valid = field_names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown {source} key(s) {unknown}.{_suggest(unknown, valid)} "
                f"Valid keys are: {', '.join(valid)}"
            )
        coerced = {k: _coerce(k, v) for k, v in values.items()}
        try:
            return cls(**coerced)
        except TypeError as e:  # pragma: no cover - from_dict already filtered the keys
            raise ConfigError(f"invalid {source}: {e}") from e

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated like any other config)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


def field_names() -> list[str]:
    """The config keys, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


@cache
def field_types() -> dict[str, Any]:
    """Resolved type annotation of each field."""
    return get_type_hints(TrainConfig)


RUN_KEYS = ("total_timesteps", "run_dir")
"""Keys a ``--config`` file may hold besides the `TrainConfig` fields: how long and where this
run goes, which ``qmix-train`` takes from the file below its flags. They are not saved in
``config.yaml`` (a resumed run is told its total afresh, and its folder is where it is)."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML (or JSON) file of config keys and run keys (`RUN_KEYS`), one layer."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}; check the path") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of config keys; found {type(data).__name__}"
        )
    valid = [*field_names(), *RUN_KEYS]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in config file {p}.{_suggest(unknown, valid)} "
            f"Valid keys are: {', '.join(valid)}"
        )
    return dict(data)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML (or JSON) config file into a dict of config keys (one layer, no includes).

    The run keys `RUN_KEYS` are refused here (they are not `TrainConfig` fields); ``qmix-train``
    reads them with `read_config_file`."""
    values = read_config_file(path)
    run = sorted(set(values) & set(RUN_KEYS))
    if run:
        raise ConfigError(
            f"{run} in config file {path} are qmix-train's run keys, not TrainConfig fields; "
            "pass them to Trainer(run_dir=...) and train(total_timesteps=...), or give the file "
            "to qmix-train --config, which reads them"
        )
    return values


def _suggest(unknown: list[str], valid: list[str]) -> str:
    """The "did you mean" hint of each unknown key that is close to a valid one."""
    if len(unknown) == 1:
        return did_you_mean(unknown[0], valid)
    return "".join(f" {k!r}:{hint}" for k in unknown if (hint := did_you_mean(k, valid)))


def save_config(config: TrainConfig, run_dir: Path) -> None:
    """Write the resolved config as config.yaml (for people) and config.json (for programs)."""
    import yaml

    from .run_files import atomic_write_bytes

    d = config.to_dict()
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(d, sort_keys=False).encode())
    atomic_write_bytes(run_dir / "config.json", json.dumps(d, indent=2).encode())


# --- validation helpers ----------------------------------------------------------------------------


def _choices(name: str) -> tuple[Any, ...]:
    if name in REGISTRY_CHOICES:
        return tuple(REGISTRY_CHOICES[name])
    return get_args(field_types()[name])


def _check_choice(name: str, value: Any) -> None:
    allowed = _choices(name)
    if (
        isinstance(value, dict | list)
        or value not in allowed
        or isinstance(value, bool) != isinstance(allowed[0], bool)
    ):
        hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
        raise ConfigError(
            f"{name} must be one of {list(allowed)}; found {value!r}.{hint}".rstrip(".")
        )


def _check_int(name: str, value: Any, low: int, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer in [{low}, {high}]; found {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be in [{low}, {high}]; found {value}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name} must be a number; found {value!r}")
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}]; found {value}")


def _coerce(name: str, value: Any) -> Any:
    """Accept ints for float fields (YAML writes 1 for 1.0) and nothing else implicitly."""
    hint = field_types()[name]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
