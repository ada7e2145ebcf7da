"""A run never writes a poisoned policy: NaN/inf inputs and losses stop it, good checkpoints survive."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import tiny

from qmix_edge.envs import make_env
from qmix_edge.train.checkpoint import (
    REPLAY_FILE,
    latest_checkpoint,
    list_checkpoints,
    load_run,
    read_model,
    read_state,
    write_checkpoint,
)
from qmix_edge.train.cli import main
from qmix_edge.train.errors import (
    NonFiniteCheckpointError,
    NonFiniteInputError,
    NonFiniteLossError,
    TrainError,
)
from qmix_edge.train.finite import non_finite_tensors
from qmix_edge.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("plain_logging")

FAULTY = "faulty_envs:faulty_team"
SEED_MODULUS = 40  # a faulty episode about every 40 episodes: checkpoints come first


def _faulty_config(fault: str, at_step: int) -> dict:
    return tiny(
        n_agents=2,
        n_envs=2,
        batch_size=4,
        checkpoint_interval=48,
        eval_interval=100_000,
        env_kwargs={"fault": fault, "at_step": at_step, "seed_modulus": SEED_MODULUS},
    )


def _assert_checkpoints_finite(run_dir: Path) -> None:
    folders = list_checkpoints(run_dir)
    assert folders, "the run should have written checkpoints before the fault"
    for folder in folders:
        assert non_finite_tensors(read_model(folder)) == [], folder
    with np.load(latest_checkpoint(run_dir) / REPLAY_FILE) as z:  # type: ignore[operator]
        for name in z.files:
            if np.issubdtype(z[name].dtype, np.floating):
                assert np.isfinite(z[name]).all(), name


@pytest.mark.parametrize(
    ("fault", "at_step", "agent"),
    [("observation", 3, "agent_1"), ("state", 2, None), ("reward", 4, "agent_0")],
)
def test_non_finite_env_value_stops_the_run_naming_where(
    fault: str, at_step: int, agent: str | None, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer(
        "qmix", env=FAULTY, seed=0, config=_faulty_config(fault, at_step), run_dir=run_dir
    )
    with pytest.raises(
        NonFiniteInputError, match=f"{fault}.* at step {at_step} of the episode"
    ) as e:
        trainer.train(total_timesteps=5_000)
    err = e.value
    assert (err.env_id, err.field, err.step, err.agent) == (FAULTY, fault, at_step, agent)
    assert err.seed % SEED_MODULUS == 0
    # The seed reproduces the value: reset with it and step `step` times.
    env = make_env(
        FAULTY, env_kwargs={"fault": fault, "at_step": at_step, "seed_modulus": SEED_MODULUS}
    )
    view = env.reset(seed=err.seed)
    for _ in range(at_step):
        res = env.step(np.zeros(2, np.int64))
        view = res.next
    value = {"observation": view.obs, "state": view.state, "reward": np.array(res.reward)}[fault]
    assert not np.isfinite(value).all()
    assert trainer.env_steps < 5_000
    _assert_checkpoints_finite(run_dir)


def test_non_finite_value_at_reset_names_the_reset(tmp_path: Path) -> None:
    trainer = Trainer(
        "vdn", env=FAULTY, seed=0, config=_faulty_config("observation", 0), run_dir=tmp_path / "r"
    )
    with pytest.raises(NonFiniteInputError, match="at the reset of the episode with seed") as e:
        trainer.train(total_timesteps=5_000)
    assert e.value.step == 0 and e.value.agent == "agent_1"


def test_cli_exits_1_and_names_the_field_and_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    kwargs = {"fault": "reward", "at_step": 5, "seed_modulus": SEED_MODULUS}
    argv = ["--env", FAULTY, "--env-kwargs", json.dumps(kwargs), "--n-agents", "2", "--seed", "0"]
    argv += ["--hidden-dim", "8", "--n-envs", "2", "--batch-size", "4", "--vector", "sync"]
    argv += ["--checkpoint-interval", "48", "--eval-interval", "100000", "--eval-episodes", "2"]
    argv += ["--run-dir", str(run_dir), "--total-timesteps", "5000", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert "+inf reward for agent 'agent_0' at step 5 of the episode with seed" in err[0]
    assert f"The last good checkpoint is {latest_checkpoint(run_dir)}" in err[0]
    _assert_checkpoints_finite(run_dir)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_diverging_learner_stops_and_the_last_good_checkpoint_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = ["--env", "two_step", "--hidden-dim", "8", "--n-envs", "2", "--batch-size", "4"]
    argv += ["--eval-episodes", "2", "--optimizer", "rmsprop", "--no-standardise-rewards"]
    # Learning starts after 50 episodes (100 env steps, the first checkpoint); a learning rate far
    # too high for RMSprop without clipping then blows the values up within a few updates.
    argv += ["--learning-starts", "50", "--checkpoint-interval", "100"]
    argv += ["--learning-rate", "1.0", "--grad-norm-clip", "0", "--run-dir", str(run_dir)]
    assert main([*argv, "--total-timesteps", "2000", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert "the update was not applied" in err[0] and "last finite loss" in err[0]
    assert "learning_rate=1" in err[0] and "gamma=" in err[0]
    good = latest_checkpoint(run_dir)
    assert good is not None and good.name == "step_000000100"
    assert f"The last good checkpoint is {good}" in err[0]
    assert [p.name for p in list_checkpoints(run_dir)][-1] == good.name
    _assert_checkpoints_finite(run_dir)

    cool = ["--learning-rate", "0.0005", "--grad-norm-clip", "10"]
    assert main(["--resume", str(run_dir), *cool, "--total-timesteps", "600", "-q"]) == 0
    err = capsys.readouterr().err
    assert f"from the last good checkpoint {good.name} (it had stopped at 1" in err
    assert "NonFiniteLossError" in err
    run = load_run(run_dir)
    assert run.step == 600 and run.config["learning_rate"] == 0.0005
    _assert_checkpoints_finite(run_dir)


def test_learner_error_carries_the_update_and_last_finite_loss(tmp_path: Path) -> None:
    cfg = tiny(
        learning_rate=1.0, grad_norm_clip=0.0, optimizer="rmsprop", standardise_rewards=False
    )
    trainer = Trainer("qmix", env="two_step", seed=1, config=cfg, run_dir=tmp_path / "r")
    with pytest.raises(
        NonFiniteLossError, match=r"update \d+: the (TD loss|gradient norm) is"
    ) as e:
        trainer.train(total_timesteps=2_000)
    err = e.value
    assert err.update == trainer.learner.updates + 1  # the failing update was not counted
    assert err.last_finite_loss is not None and np.isfinite(err.last_finite_loss)
    assert err.quantity in {"loss", "grad_norm"}
    assert non_finite_tensors(trainer.learner.state_dict()) == []  # the step was not applied


def test_checkpoint_with_a_non_finite_tensor_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer("vdn", env="two_step", seed=0, config=tiny(), run_dir=run_dir).train(100)
    good = latest_checkpoint(run_dir)
    assert good is not None
    before = _digest(good)
    model = read_model(good)
    model["learner"]["agent_net"][next(iter(model["learner"]["agent_net"]))][0] = torch.nan
    with pytest.raises(
        NonFiniteCheckpointError, match="refusing to write checkpoint step_000000200"
    ) as e:
        write_checkpoint(run_dir, 200, model, read_state(good))
    assert e.value.tensors[0].startswith("learner/agent_net/")
    assert isinstance(e.value, TrainError)
    assert latest_checkpoint(run_dir) == good and _digest(good) == before
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best",  # the best greedy evaluation's networks
        "latest.json",
        good.name,
    ]
