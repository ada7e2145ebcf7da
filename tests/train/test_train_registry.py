"""The mixer and agent-network registries drive construction, the flags' choices and the errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qmix_edge.envs import AgentSpec, EnvSpec
from qmix_edge.train.cli import build_parser
from qmix_edge.train.config import TrainConfig
from qmix_edge.train.errors import ConfigError
from qmix_edge.train.networks import AgentNetwork
from qmix_edge.train.registry import AGENT_NETWORKS, ALGORITHMS, MIXERS, Entry, build_models

SPEC = EnvSpec(
    "test", tuple(AgentSpec(f"a{i}", 4, 3) for i in range(2)), state_dim=5, episode_limit=4
)


class DoubledSum(nn.Module):
    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        return 2 * agent_qs.sum(dim=-1)


def test_every_algorithm_names_a_registered_mixer_and_every_entry_builds() -> None:
    assert set(ALGORITHMS.values()) <= set(MIXERS)
    for algo in ALGORITHMS:
        for net in AGENT_NETWORKS:
            agent_net, mixer = build_models(TrainConfig(algo=algo, agent_network=net), SPEC)
            assert isinstance(agent_net, AgentNetwork) and agent_net.kind == net
            assert (mixer is None) == (ALGORITHMS[algo] == "none")


def test_a_new_entry_is_the_only_change_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    def wide(config: TrainConfig, spec: EnvSpec) -> AgentNetwork:
        return AgentNetwork(spec, "mlp", hidden_dim=2 * config.hidden_dim)

    monkeypatch.setitem(AGENT_NETWORKS, "wide", Entry("an MLP twice as wide", wide))
    monkeypatch.setitem(MIXERS, "double", Entry("twice the sum", lambda c, s: DoubledSum()))
    monkeypatch.setitem(ALGORITHMS, "vdn2", "double")
    args = build_parser().parse_args(["--agent-network", "wide", "--algo", "vdn2"])
    config = TrainConfig(agent_network=args.agent_network, algo=args.algo, hidden_dim=8)
    agent_net, mixer = build_models(config, SPEC)
    assert agent_net.hidden_dim == 16 and isinstance(mixer, DoubledSum)
    assert config.mixer == "double"


def test_unknown_names_list_the_choices_and_the_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"agent_network must be one of \['mlp', 'gru'\]; found 'gur'\. Did you"
    ):
        TrainConfig(agent_network="gur")
    with pytest.raises(
        ConfigError, match=r"algo must be one of .*; found 'qmx'\. Did you mean 'qmix'"
    ):
        TrainConfig(algo="qmx")


def test_help_lists_the_registered_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{mlp,gru}" in out and "{qmix,vdn,iql}" in out
    for entry in (*AGENT_NETWORKS.values(), *MIXERS.values()):
        assert entry.summary in out
