"""A run keeps the networks of its best greedy evaluation; the learning curve says what it shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from train_helpers import tiny

from qmix_edge.envs import make_env
from qmix_edge.envs.baselines import random_team_return
from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.errors import CheckpointError
from qmix_edge.train.trainer import Trainer


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    return [(r["step"], r["eval/return_mean"]) for r in recs if "eval/return_mean" in r]


def test_best_evaluation_is_kept_loaded_and_marked(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    cfg = tiny(eval_interval=100, checkpoint_interval=200, n_envs=2, batch_size=4)
    trainer = Trainer("vdn", env="penalty", seed=1, config=cfg, run_dir=run_dir)
    trainer.train(total_timesteps=600)
    evals = _evals(run_dir)
    assert evals[0][0] == 0  # the curve starts at step 0: the untrained team is evaluated first
    best_step, best_return = max(evals, key=lambda e: e[1])  # first of equal maxima
    best_step = next(s for s, r in evals if r == best_return)

    best = load_run(run_dir)  # the default: the best evaluation's networks
    assert (best.step, best.checkpoint_path.name) == (best_step, "best")
    assert load_run(run_dir, "best").step == best_step
    assert load_run(run_dir, "last").step == 600

    meta = Image.open(run_dir / "learning_curve.png").text
    assert int(meta["exported_step"]) == best_step
    random_return = random_team_return(make_env("penalty"), trainer.eval_seeds)
    assert float(meta["random_return"]) == pytest.approx(random_return, abs=1e-3)
    assert "std" in meta["band"] and "4 eval episodes" in meta["band"]


def test_a_run_without_a_best_exports_its_latest(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    Trainer("qmix", env="two_step", config=tiny(), run_dir=run_dir).train(total_timesteps=48)
    for p in (run_dir / "checkpoints" / "best").iterdir():  # a run from before best was kept
        p.unlink()
    (run_dir / "checkpoints" / "best").rmdir()
    assert load_run(run_dir).step == 48
    with pytest.raises(CheckpointError, match=r"no best checkpoint.*--checkpoint last"):
        load_run(run_dir, "best")
