"""Training on simple_spread's batched engine is the same run as on mpe2's own env objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from train_helpers import tiny

from qmix_edge.train.cli import build_parser
from qmix_edge.train.errors import ConfigError
from qmix_edge.train.trainer import Trainer

pytest.importorskip("mpe2")


def _eval_returns(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["eval/return_mean"] for r in map(json.loads, lines) if "eval/return_mean" in r]


def test_batched_and_per_object_engines_give_the_same_run(tmp_path: Path) -> None:
    results = {}
    for vector in ("batched", "sync"):
        cfg = tiny(vector=vector, eval_interval=400, learning_starts=8)
        trainer = Trainer(
            "qmix", env="simple_spread", seed=3, config=cfg, run_dir=tmp_path / vector
        )
        results[vector] = trainer.train(total_timesteps=1200)
        assert results[vector]["updates"] > 0
    assert _eval_returns(tmp_path / "batched") == _eval_returns(tmp_path / "sync")
    assert results["batched"]["mean_reward"] == results["sync"]["mean_reward"]


def test_auto_picks_the_batched_engine_and_the_config_says_so(tmp_path: Path) -> None:
    trainer = Trainer(
        "qmix", env="simple_spread", config=tiny(vector="auto"), run_dir=tmp_path / "a"
    )
    assert trainer.config.vector == "batched"
    trainer.train(total_timesteps=100)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved["vector"] == "batched"
    other = Trainer(
        "qmix",
        env="simple_spread",
        config=tiny(vector="auto", env_kwargs={"terminate_on_success": True}),
        run_dir=tmp_path / "b",
    )
    assert other.config.vector in ("sync", "subprocess")  # an option the array engine lacks


def test_batched_engine_refused_for_other_envs(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"vector='batched' steps simple_spread \(with its default options\) and VMAS",
    ):
        Trainer("qmix", env="two_step", config=tiny(vector="batched"), run_dir=tmp_path / "r")


def test_help_names_the_engines() -> None:
    text = build_parser().format_help()
    assert "batched" in text and "mpe2" in text


def test_update_ratio_in_env_steps_and_decaying_learning_rate(tmp_path: Path) -> None:
    updates = {}
    for name, extra in {
        "per_episode": {},
        "per_50_steps": {"env_steps_per_update": 50, "lr_schedule": "linear", "lr_end": 1e-5},
    }.items():
        cfg = tiny(vector="batched", learning_starts=8, learning_rate=1e-3, **extra)
        trainer = Trainer("qmix", env="simple_spread", seed=0, config=cfg, run_dir=tmp_path / name)
        result = trainer.train(total_timesteps=1000)
        updates[name] = result["updates"]
        if name == "per_50_steps":  # decayed over the run's 1000 env steps
            # set before each vector step: the last one started at 996 env steps
            assert trainer.learner.learning_rate == pytest.approx(1e-3 - (1e-3 - 1e-5) * 0.996)
        else:
            assert trainer.learner.learning_rate == 1e-3
    # 4 worlds end an episode every 25 steps; learning owes from the 2nd wave (8 episodes) on:
    # 9 waves of 100 env steps = 18 updates owed at 1 per 50 (the last wave's are paid later).
    assert 14 <= updates["per_50_steps"] <= 18
    assert updates["per_episode"] >= 30  # one per episode: 36 owed
