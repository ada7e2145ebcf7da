"""The training configuration: one frozen dataclass, its validation, YAML loading and CLI flags.

`TrainConfig` is the single declaration of every training hyperparameter. Each field carries a
docstring stating its unit (env steps, episodes, transitions or learner updates); the same docstrings
become the ``qmix-train --help`` text (`field_docs`). A run saves its resolved config as
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
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from .errors import ConfigError

Algo = Literal["qmix", "vdn", "iql"]
VectorKind = Literal["auto", "sync", "subprocess", "ray"]

ALGO_TO_MIXER: dict[str, str] = {"qmix": "qmix", "vdn": "vdn", "iql": "none"}
"""Which mixer each algorithm uses (IQL has none: each agent learns from the team reward)."""

DEFAULT_ENV = "simple_spread"


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a QMIX / VDN / IQL training run (see the module table for sources)."""

    # --- algorithm and environment -------------------------------------------------------------
    algo: Algo = "qmix"
    """Algorithm: qmix (monotonic mixer), vdn (sum) or iql (no mixer, per-agent TD on the team reward)."""
    env: str = DEFAULT_ENV
    """Environment id: a short name (simple_spread), module:attribute, a built-in, or a Gymnasium id."""
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the environment constructor."""
    n_agents: int = 3
    """Number of agents, for environments whose team size is a parameter (Gymnasium copies)."""
    team_reward: Literal["sum", "mean"] = "sum"
    """How the agents' rewards combine into the team reward."""
    episode_limit: int | None = None
    """Maximum env steps per episode (truncation, bootstrapped); None = the environment's own."""

    # --- agent network and mixer ----------------------------------------------------------------
    agent_network: Literal["mlp", "gru"] = "mlp"
    """Agent utility network: mlp (FC-FC-FC) or gru (FC-GRUCell-FC, pymarl's rnn_agent)."""
    hidden_dim: int = 64
    """Width of the agent network's hidden layers (units)."""
    share_params: bool = True
    """One set of agent-network weights for all agents (True) or one per agent."""
    use_prev_action: bool = False
    """Feed each agent its own previous action (one-hot) as input."""
    use_agent_id: bool = True
    """Feed each agent its one-hot agent index as input."""
    mixing_embed_dim: int = 32
    """Width of the QMIX mixing network's hidden layer (units)."""
    hypernet_layers: Literal[1, 2] = 2
    """Depth of the QMIX hypernetworks producing mixing weights: 1 (the paper) or 2 (pymarl)."""
    hypernet_embed: int = 64
    """Hidden width of 2-layer hypernetworks (units)."""

    # --- learner -----------------------------------------------------------------------------------
    learning_rate: float = 5e-4
    """Optimizer step size."""
    optimizer: Literal["adam", "rmsprop"] = "adam"
    """Optimizer: adam (EPyMARL) or rmsprop (pymarl; alpha optim_alpha, eps optim_eps)."""
    optim_alpha: float = 0.99
    """RMSprop smoothing constant (pymarl); unused by adam."""
    optim_eps: float = 1e-5
    """RMSprop epsilon (pymarl); unused by adam (which keeps torch's 1e-8)."""
    gamma: float = 0.95
    """Discount factor per env step, in [0, 1] (the seed's 0.99 diverged on simple_spread; see table)."""
    batch_size: int = 32
    """Episodes per learner update."""
    buffer_size: int = 50_000
    """Replay capacity in transitions (env steps); stored as buffer_size // episode_limit episodes."""
    target_update_freq: int = 200
    """Learner updates between hard copies of the online networks into the target networks."""
    double_q: bool = True
    """Double Q-learning: online networks pick the next action, target networks evaluate it."""
    grad_norm_clip: float = 10.0
    """Maximum global gradient norm per update (0 disables clipping)."""
    updates_per_episode: float = 1.0
    """Learner updates per episode collected (EPyMARL: 1); fractions accumulate across episodes."""
    standardise_rewards: bool = True
    """Standardise rewards in TD targets with running mean/std of collected rewards (EPyMARL)."""
    learning_starts: int | None = None
    """Episodes in replay before learning starts; None = batch_size."""

    # --- exploration and collection -------------------------------------------------------------
    epsilon_start: float = 1.0
    """Exploration rate at env step 0, in [0, 1]."""
    epsilon_end: float = 0.05
    """Exploration rate after epsilon_decay_steps env steps, in [0, 1]."""
    epsilon_decay_steps: int = 5000
    """Env steps over which epsilon decays linearly from epsilon_start to epsilon_end."""
    n_envs: int = 16
    """Training environments stepped together (one batched forward per vector step)."""
    vector: VectorKind = "auto"
    """How training envs run: sync (in this process), subprocess (worker process), ray (Ray actors on
    the running Ray or a local one, one CPU each; needs qmix-edge[ray]), auto (sync or subprocess)."""

    # --- evaluation, logging, checkpoints -------------------------------------------------------
    eval_interval: int = 20_000
    """Env steps between greedy evaluations (a final one always runs at the end of training)."""
    eval_episodes: int = 32
    """Greedy evaluation episodes per evaluation (fixed seeds, separate environments)."""
    log_interval: int = 5_000
    """Env steps between rollout/train metric records."""
    checkpoint_interval: int = 50_000
    """Env steps between checkpoints (a final one is always written; 0 = only the final one)."""
    seed: int = 42
    """Seed of every random stream of the run (networks, exploration, env resets, replay sampling)."""
    torch_threads: int = 1
    """torch intra-op threads (0 = torch's default); 1 is fastest for these small networks."""

    def __post_init__(self) -> None:
        _check_choice("algo", self.algo)
        _check_choice("team_reward", self.team_reward)
        _check_choice("agent_network", self.agent_network)
        _check_choice("hypernet_layers", self.hypernet_layers)
        _check_choice("optimizer", self.optimizer)
        _check_choice("vector", self.vector)
        if not isinstance(self.env, str) or not self.env:
            raise ConfigError(f"env must be a non-empty environment id; found {self.env!r}")
        if not isinstance(self.env_kwargs, Mapping):
            raise ConfigError(f"env_kwargs must be a mapping; found {self.env_kwargs!r}")
        _check_int("n_agents", self.n_agents, 1)
        if self.episode_limit is not None:
            _check_int("episode_limit", self.episode_limit, 1)
        for name in ("hidden_dim", "mixing_embed_dim", "hypernet_embed", "batch_size", "n_envs"):
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
        return ALGO_TO_MIXER[self.algo]

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
                f"unknown {source} key(s) {unknown}; valid keys are: {', '.join(valid)}"
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


@cache
def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal after its declaration), for ``--help``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(TrainConfig)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML (or JSON) config file into a dict of config keys (one layer, no includes)."""
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
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in config file {p}; valid keys are: {', '.join(field_names())}"
        )
    return dict(data)


def save_config(config: TrainConfig, run_dir: Path) -> None:
    """Write the resolved config as config.yaml (for people) and config.json (for programs)."""
    import yaml

    from .checkpoint import atomic_write_bytes

    d = config.to_dict()
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(d, sort_keys=False).encode())
    atomic_write_bytes(run_dir / "config.json", json.dumps(d, indent=2).encode())


# --- validation helpers ----------------------------------------------------------------------------


def _choices(name: str) -> tuple[Any, ...]:
    return get_args(field_types()[name])


def _check_choice(name: str, value: Any) -> None:
    allowed = _choices(name)
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        raise ConfigError(f"{name} must be one of {list(allowed)}; found {value!r}")


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
