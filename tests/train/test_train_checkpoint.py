"""Checkpoints: atomic files, no pickles, `load_run` for the exporter, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import tiny

from qmix_edge.train.checkpoint import CheckpointError, load_run, read_state
from qmix_edge.train.mixers import QMixer
from qmix_edge.train.networks import AgentNetwork
from qmix_edge.train.run_files import atomic_write_bytes
from qmix_edge.train.trainer import Trainer


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "two_step"
    trainer = Trainer("qmix", env="two_step", seed=3, config=tiny(), run_dir=run_dir)
    trainer.train(total_timesteps=400)
    return run_dir


def test_load_run_rebuilds_networks_in_eval_mode(two_step_run: Path) -> None:
    run = load_run(two_step_run, "last")  # the default is the best evaluation's (tested apart)
    assert isinstance(run.agent_net, AgentNetwork)
    assert isinstance(run.mixer, QMixer)
    assert not run.agent_net.training and not run.mixer.training
    assert run.step == 400
    assert run.spec.n_agents == 2 and run.spec.env_id == "two_step"
    assert run.config["algo"] == "qmix" and run.config["hidden_dim"] == 16
    assert run.run_id == json.loads((two_step_run / "run.json").read_text())["run_id"]
    assert run.checkpoint_path == two_step_run / "checkpoints" / "step_000000400"
    # The weights are the trained ones: identical to the checkpoint's tensors.
    sd = torch.load(run.checkpoint_path / "model.pt", weights_only=True)["learner"]["agent_net"]
    for k, v in run.agent_net.state_dict().items():
        assert torch.equal(v, sd[k])


def test_load_run_by_name_and_path(two_step_run: Path) -> None:
    by_name = load_run(two_step_run, "step_000000400")
    by_file = load_run(two_step_run, two_step_run / "checkpoints" / "step_000000400" / "model.pt")
    assert by_name.checkpoint_path == by_file.checkpoint_path


def test_checkpoint_holds_no_pickled_objects(two_step_run: Path) -> None:
    folder = two_step_run / "checkpoints" / "step_000000400"
    torch.load(folder / "model.pt", weights_only=True)  # raises on any pickled object
    state = read_state(folder)
    assert state["env_steps"] == 400 and "rng" in state["replay"]
    import numpy as np

    for name in ("replay.npz", "collector.npz"):
        with np.load(folder / name, allow_pickle=False) as z:
            assert z.files


def test_load_run_errors(tmp_path: Path, two_step_run: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a qmix-edge run directory"):
        load_run(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_run(two_step_run, "step_999")


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]
