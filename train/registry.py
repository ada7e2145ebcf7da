"""The visible registries of mixers and agent networks: one name -> one summary and one builder.

`MIXERS` and `AGENT_NETWORKS` are the only place a choice is declared. They drive everything that
names one: `build_models` (what the learner, a resumed run and the exporter construct), the
``--algo`` / ``--agent-network`` choices and ``--help`` text of ``qmix-train`` (through
`TrainConfig`), and the "unknown ..., did you mean" errors. Adding an entry is all it takes to add a
choice. Nothing registers itself by being imported.

Which mixer an algorithm uses is `ALGORITHMS` (IQL has none: each agent learns from the team
reward).

Importing this module does not import torch (``qmix-train --help`` and config validation stay
fast); a builder imports the torch module it needs when it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from qmix_edge.envs.errors import did_you_mean

from .errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from qmix_edge.envs import EnvSpec

    from .config import TrainConfig
    from .networks import AgentNetwork

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One choice of a registry: what it is (one line, for ``--help``) and how it is built."""

    summary: str
    build: Callable[[TrainConfig, EnvSpec], T]


def _qmix(config: TrainConfig, spec: EnvSpec) -> nn.Module:
    from .mixers import QMixer

    return QMixer(
        spec.n_agents,
        spec.state_dim,
        embed_dim=config.mixing_embed_dim,
        hypernet_layers=config.hypernet_layers,
        hypernet_embed=config.hypernet_embed,
    )


def _vdn(config: TrainConfig, spec: EnvSpec) -> nn.Module:
    from .mixers import VDNMixer

    return VDNMixer()


def _no_mixer(config: TrainConfig, spec: EnvSpec) -> None:
    return None


def _agent_network(kind: str) -> Callable[[TrainConfig, EnvSpec], AgentNetwork]:
    def build(config: TrainConfig, spec: EnvSpec) -> AgentNetwork:
        from .networks import AgentNetwork

        return AgentNetwork(
            spec,
            kind=kind,
            hidden_dim=config.hidden_dim,
            share_params=config.share_params,
            use_prev_action=config.use_prev_action,
            use_agent_id=config.use_agent_id,
        )

    return build


MIXERS: dict[str, Entry[nn.Module | None]] = {
    "qmix": Entry("monotonic mixing network with state-conditioned hypernetworks (QMIX)", _qmix),
    "vdn": Entry("sum of agent utilities (VDN)", _vdn),
    "none": Entry("no mixer: independent Q-learning (IQL)", _no_mixer),
}
"""Mixer name -> what it is and its builder (``None``: no mixer)."""

AGENT_NETWORKS: dict[str, Entry[AgentNetwork]] = {
    "mlp": Entry(
        "FC-ReLU-FC-ReLU-FC (EPyMARL's MLP agent)",
        _agent_network("mlp"),
    ),
    "gru": Entry(
        "FC-ReLU-GRUCell-FC (pymarl's rnn_agent; hidden state reset at episode start)",
        _agent_network("gru"),
    ),
}
"""Agent network name -> what it is and its builder."""

ALGORITHMS: dict[str, str] = {"qmix": "qmix", "vdn": "vdn", "iql": "none"}
"""Algorithm -> the name of the mixer (in `MIXERS`) it trains with."""


def lookup(registry: Mapping[str, Entry[T]], name: str, what: str) -> Entry[T]:
    """The entry ``name`` of ``registry``; an unknown name raises `ConfigError` with the choices
    and the closest one."""
    try:
        return registry[name]
    except (KeyError, TypeError) as e:
        raise ConfigError(
            f"unknown {what} {name!r}; choose one of {list(registry)}."
            f"{did_you_mean(str(name), list(registry))}"
        ) from e


def choices_help(registry: Mapping[str, Entry[Any]]) -> str:
    """``name (summary); ...`` for every entry, for ``--help``."""
    return "; ".join(f"{name}: {entry.summary}" for name, entry in registry.items())


def build_models(config: TrainConfig, spec: EnvSpec) -> tuple[AgentNetwork, nn.Module | None]:
    """The agent network and mixer ``config`` names, sized for ``spec`` (fresh weights)."""
    agent_net = lookup(AGENT_NETWORKS, config.agent_network, "agent network").build(config, spec)
    mixer = lookup(MIXERS, ALGORITHMS[config.algo], "mixer").build(config, spec)
    return agent_net, mixer
