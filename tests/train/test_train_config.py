"""TrainConfig: the seed's defaults, validation messages, YAML loading, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmix_edge.common.settings import docs
from qmix_edge.train.config import TrainConfig, field_names, load_config_file
from qmix_edge.train.errors import ConfigError


def test_seed_defaults() -> None:
    c = TrainConfig()
    assert (c.n_agents, c.hidden_dim, c.mixing_embed_dim) == (3, 64, 32)
    assert (c.learning_rate, c.buffer_size, c.batch_size) == (5e-4, 50_000, 32)
    assert c.gamma == 0.95  # changed from the seed's 0.99: documented in the config table
    assert c.target_update_freq == 200
    assert (c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps, c.seed) == (1.0, 0.05, 5000, 42)
    assert c.agent_network == "mlp" and c.team_reward == "sum" and c.mixer == "qmix"


def test_every_field_is_documented() -> None:
    found = docs(TrainConfig)
    assert set(found) == set(field_names())
    assert all(len(d) > 10 for d in found.values())


def test_derived_values() -> None:
    c = TrainConfig(algo="iql", epsilon_decay_steps=100, epsilon_start=1.0, epsilon_end=0.0)
    assert c.mixer == "none"
    assert c.epsilon(0) == 1.0 and c.epsilon(50) == 0.5 and c.epsilon(10_000) == 0.0
    assert TrainConfig().buffer_episodes(25) == 2000  # 50_000 transitions of 25-step episodes
    with pytest.raises(ConfigError, match=r"buffer_size=100 transitions holds only 4 episodes"):
        TrainConfig(buffer_size=100).buffer_episodes(25)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algo": "dqn"}, r"algo must be one of \['qmix', 'vdn', 'iql'\]; found 'dqn'"),
        ({"gamma": 1.5}, r"gamma must be in \[0.0, 1.0\]; found 1.5"),
        ({"batch_size": 0}, r"batch_size must be in \[1, inf\]; found 0"),
        ({"hidden_dim": 3.5}, r"hidden_dim must be an integer"),
        ({"learning_rate": 0.0}, r"learning_rate must be in \(0.0, 1.0\]; found 0.0"),
        ({"epsilon_end": -0.1}, r"epsilon_end must be in \[0.0, 1.0\]"),
        ({"hypernet_layers": 3}, r"hypernet_layers must be one of \[1, 2\]; found 3"),
        ({"agent_network": "lstm"}, r"agent_network must be one of \['mlp', 'gru'\]"),
        ({"optimizer": "sgd"}, r"optimizer must be one of \['adam', 'radam', 'rmsprop'\]"),
        ({"team_reward": "max"}, r"team_reward must be one of \['sum', 'mean'\]"),
        ({"n_envs": True}, r"n_envs must be an integer"),
        ({"env": ""}, r"env must be a non-empty environment id"),
    ],
)
def test_bad_values_name_the_value_and_the_range(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(changes)


def test_unknown_keys_list_the_valid_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown config key\(s\) \['hiden_dim'\]\. Did you mean 'hidden_dim'\? Valid keys "
        r"are: algo, env",
    ):
        TrainConfig.from_dict({"hiden_dim": 32})


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("hidden_dim: 32\nlearning_rate: 1\nenv_kwargs: {N: 4}\n")
    values = load_config_file(path)
    c = TrainConfig.from_dict(values)
    assert c.hidden_dim == 32 and c.learning_rate == 1.0 and c.env_kwargs == {"N": 4}
    path.write_text("nope: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nope'\] in config file"):
        load_config_file(path)
    path.write_text("total_timesteps: 100\n")
    with pytest.raises(ConfigError, match=r"\['total_timesteps'\] in config file .* run keys"):
        load_config_file(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.yaml")


def test_round_trip() -> None:
    c = TrainConfig(env_kwargs={"N": 2}, episode_limit=10)
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.replace(seed=7).seed == 7


def test_linear_learning_rate_schedule() -> None:
    c = TrainConfig(learning_rate=0.005, lr_schedule="linear", lr_end=0.001)
    assert c.learning_rate_at(0, 1000) == 0.005
    assert c.learning_rate_at(500, 1000) == pytest.approx(0.003)
    assert c.learning_rate_at(2000, 1000) == pytest.approx(0.001)
    fixed_span = c.replace(lr_decay_steps=100)
    assert fixed_span.learning_rate_at(50, 10**6) == pytest.approx(0.003)
    assert TrainConfig(learning_rate=0.01).learning_rate_at(500, 1000) == 0.01


def test_epymarl_preset_is_epymarls_qmix_for_its_robot_tasks() -> None:
    from qmix_edge.train.config import preset_values

    c = TrainConfig.from_dict(preset_values("epymarl"))
    assert (c.gamma, c.learning_rate, c.batch_size, c.target_update_freq) == (0.99, 5e-4, 32, 200)
    assert (c.epsilon_start, c.epsilon_end, c.epsilon_decay_steps) == (1.0, 0.05, 50_000)
    assert c.standardise_rewards and c.double_q and c.use_agent_id and not c.use_prev_action
    assert (c.agent_network, c.hidden_dim, c.updates_per_episode) == ("mlp", 64, 1.0)
    assert (c.eval_interval, c.eval_episodes) == (50_000, 100)
    # EPyMARL's replay of 5000 episodes at lbforaging's 50-step limit; rware's 500 steps get 500.
    assert c.buffer_episodes(50) == 5000 and c.buffer_episodes(500) == 500
    # A layer like any preset: a value given over it wins.
    assert TrainConfig.from_dict({**preset_values("epymarl"), "gamma": 0.9}).gamma == 0.9
