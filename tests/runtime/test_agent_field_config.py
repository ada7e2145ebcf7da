"""qmix-agent's field-loop flags: declared once, validated with the flag named."""

from __future__ import annotations

import pytest

from qmix_edge.common.settings import build_parser, from_namespace, to_argv
from qmix_edge.runtime.agent.config import AgentConfig

BASE = ["--artifacts", "a", "--agent", "agent_0"]
PLUGINS = ["--sensor", "m:s", "--actuator", "m:a"]


def parse(argv: list[str]) -> AgentConfig:
    return from_namespace(AgentConfig, build_parser(AgentConfig, "qmix-agent").parse_args(argv))


def test_a_field_loop_needs_no_coordinator_and_reads_back_through_to_argv() -> None:
    cfg = parse([*BASE, *PLUGINS, "--rate-hz", "50", "--on-coordinator-loss", "hold"])
    assert (cfg.rate_hz, cfg.on_coordinator_loss, cfg.coordinator) == (50.0, "hold", None)
    linked = parse([*BASE, *PLUGINS, "--rate-hz", "50", "--coordinator", "127.0.0.1:50051"])
    assert linked.coordinator == "127.0.0.1:50051"  # mission control's port
    assert parse(to_argv(cfg)) == cfg


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([*BASE, "--rate-hz", "50"], "needs --sensor and --actuator"),
        ([*BASE, *PLUGINS, "--rate-hz", "0"], "rate-hz must be in"),
        ([*BASE, *PLUGINS, "--rate-hz", "50", "--step-lane-address", "h:1"], "no step lane"),
        ([*BASE], "give --coordinator"),
    ],
)
def test_bad_field_flags_are_refused_naming_the_flag(argv: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse(argv)


def test_an_unknown_loss_choice_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse([*BASE, *PLUGINS, "--rate-hz", "5", "--on-coordinator-loss", "panic"])
