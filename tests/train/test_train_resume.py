"""Resume: a resumed run reproduces an uninterrupted one; a SIGKILLed run continues; Ctrl-C saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import tiny

from qmix_edge.train.checkpoint import latest_checkpoint, read_state
from qmix_edge.train.trainer import Trainer


def _eval_records(run_dir: Path) -> list[tuple[int, float]]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval/return_mean" in rec:
            out.append((rec["step"], rec["eval/return_mean"]))
    return out


def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec["train/loss"]
    return out


@pytest.mark.parametrize(
    ("env", "extra"),
    [
        # CartPole: episodes of different lengths, so training envs are mid-episode at the checkpoint.
        ("CartPole-v1", {"n_agents": 2, "episode_limit": 60, "n_envs": 3, "agent_network": "gru"}),
        ("two_step", {"n_envs": 3}),
        # The batched engine, mid-episode at the checkpoint (120 vector steps of 25-step episodes),
        # with the update ratio in env steps and a learning rate decaying over the whole run.
        (
            "simple_spread",
            {
                "vector": "batched",
                "n_envs": 5,
                "env_steps_per_update": 30,
                "lr_schedule": "linear",
                "lr_decay_steps": 1200,
                "optimizer": "radam",
            },
        ),
        # Overlapped: the collector in its own process, in rounds of 8 vector steps (the stop at
        # 600 env steps is a round boundary; episodes of 25 steps end inside rounds).
        (
            "simple_spread",
            {
                "vector": "batched",
                "n_envs": 5,
                "env_steps_per_update": 30,
                "overlap": True,
                "overlap_round_steps": 8,
            },
        ),
        ("CartPole-v1", {"n_agents": 2, "episode_limit": 60, "n_envs": 3, "overlap": True}),
    ],
)
def test_resumed_run_equals_uninterrupted_run(env: str, extra: dict, tmp_path: Path) -> None:
    cfg = tiny(eval_interval=300, log_interval=150, **extra)
    whole = Trainer("qmix", env=env, seed=5, config=cfg, run_dir=tmp_path / "whole")
    r_whole = whole.train(total_timesteps=1200)

    part = Trainer("qmix", env=env, seed=5, config=cfg, run_dir=tmp_path / "part")
    part.train(total_timesteps=600)
    state = read_state(latest_checkpoint(tmp_path / "part"))  # type: ignore[arg-type]
    assert state["env_steps"] == 600
    resumed = Trainer(run_dir=tmp_path / "part", resume=True)
    r_part = resumed.train(total_timesteps=1200)

    for key in ("mean_reward", "std_reward", "episodes", "env_steps", "updates"):
        assert r_part[key] == r_whole[key], key
    assert _eval_records(tmp_path / "part") == _eval_records(tmp_path / "whole")
    assert _losses(tmp_path / "part") == _losses(tmp_path / "whole")
    w, p = whole.agent_net.state_dict(), resumed.agent_net.state_dict()
    assert all(torch.equal(w[k], p[k]) for k in w)
    assert resumed.run_id == part.run_id


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    cfg = tiny(eval_interval=200)
    a = Trainer("vdn", env="two_step", seed=9, config=cfg, run_dir=tmp_path / "a").train(400)
    b = Trainer("vdn", env="two_step", seed=9, config=cfg, run_dir=tmp_path / "b").train(400)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert a["mean_reward"] == b["mean_reward"]


def _start(run_dir: Path, *extra: str, new_session: bool = False) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "qmix_edge.train.cli",
        "--env",
        "two_step",
        "--run-dir",
        str(run_dir),
        "--total-timesteps",
        "1000000",
        "--checkpoint-interval",
        "400",
        "--eval-interval",
        "100000",
        "--hidden-dim",
        "8",
        "--n-envs",
        "4",
        "--buffer-size",
        "400",
        "--batch-size",
        "8",
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen[str], min_step: int) -> int:
    """Block until the run's committed checkpoint reaches ``min_step``: woken by each write of the
    trainer to its stderr (a log line follows every checkpoint), never by a timer."""
    import select

    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + 120
    while True:
        latest = run_dir / "checkpoints" / "latest.json"
        if latest.exists():
            step = int(json.loads(latest.read_text())["env_steps"])
            if step >= min_step:
                return step
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            proc.kill()
            raise AssertionError("no checkpoint appeared within 120 s")
        if not os.read(fd, 65536):  # EOF: the trainer exited
            raise AssertionError(f"the trainer exited with {proc.wait()} before the checkpoint")


# A child process either way: an env worker (forked), or the collector process of overlap.
CHILD_PROCESS_FLAGS = [("--vector", "subprocess"), ("--overlap",)]


@pytest.mark.slow
@pytest.mark.parametrize("flags", CHILD_PROCESS_FLAGS)
def test_sigkill_then_resume_continues_the_counters(flags: tuple[str, ...], tmp_path: Path) -> None:
    import psutil

    run_dir = tmp_path / "run"
    proc = _start(run_dir, *flags)
    _wait_for_checkpoint(run_dir, proc, 1200)
    workers = psutil.Process(proc.pid).children()
    assert workers, "the run should have a child process"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "child processes must not outlive a killed trainer"
    folder = latest_checkpoint(run_dir)
    assert folder is not None
    killed = read_state(folder)
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]

    target = killed["env_steps"] + 800
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmix_edge.train.cli",
            "--resume",
            str(run_dir),
            "--total-timesteps",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"wrote run to {run_dir}")
    final = read_state(latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert final["env_steps"] == target
    assert final["run_id"] == run_id == killed["run_id"]
    assert final["episodes"] > killed["episodes"]
    assert final["updates"] > killed["updates"]
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps)  # records after the checkpoint were dropped, not duplicated


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
@pytest.mark.parametrize("flags", CHILD_PROCESS_FLAGS)
def test_ctrl_c_saves_a_checkpoint(flags: tuple[str, ...], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, *flags, new_session=True)
    _wait_for_checkpoint(run_dir, proc, 400)
    os.killpg(proc.pid, signal.SIGINT)  # like a terminal: the whole process group gets it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "interrupted; checkpoint saved" in err
    state = read_state(latest_checkpoint(run_dir))  # type: ignore[arg-type]
    assert state["env_steps"] % 4 == 0 and state["env_steps"] >= 400


def test_train_called_twice_continues_like_one_call(tmp_path: Path) -> None:
    cfg = tiny(eval_interval=300, log_interval=150, n_envs=3)
    whole = Trainer("qmix", env="leaving_agents", seed=2, config=cfg, run_dir=tmp_path / "whole")
    r_whole = whole.train(total_timesteps=900)
    twice = Trainer("qmix", env="leaving_agents", seed=2, config=cfg, run_dir=tmp_path / "twice")
    twice.train(total_timesteps=450)
    r_twice = twice.train(total_timesteps=900)
    for key in ("mean_reward", "episodes", "env_steps", "updates"):
        assert r_twice[key] == r_whole[key], key
    assert _losses(tmp_path / "twice") == _losses(tmp_path / "whole")


def test_resume_refuses_changes_to_the_networks_or_streams(tmp_path: Path) -> None:
    from qmix_edge.train.errors import ConfigError

    Trainer("qmix", env="two_step", seed=1, config=tiny(), run_dir=tmp_path / "r").train(100)
    with pytest.raises(ConfigError, match=r"cannot change \['hidden_dim', 'seed'\] when resuming"):
        Trainer(seed=2, config={"hidden_dim": 4}, run_dir=tmp_path / "r", resume=True)
    resumed = Trainer(config={"eval_interval": 50}, run_dir=tmp_path / "r", resume=True)
    assert resumed.config.eval_interval == 50
