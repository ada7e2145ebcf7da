"""qmix-train end to end: flags over YAML, exit codes, the files written, the last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from qmix_edge.train.checkpoint import load_run
from qmix_edge.train.cli import main

TINY = ["--hidden-dim", "8", "--n-envs", "2", "--batch-size", "4", "--eval-episodes", "2"]


def test_cli_trains_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("hidden_dim: 32\nmixing_embed_dim: 4\nalgo: vdn\n")
    run_dir = tmp_path / "run"
    argv = ["--config", str(config), "--env", "two_step", "--algo", "qmix", "--seed", "3"]
    argv += [*TINY, "--no-double-q", "--run-dir", str(run_dir), "--total-timesteps", "200", "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"wrote run to {run_dir}/")
    assert "greedy return" in out[-2]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["hidden_dim"] == 8  # the flag beats the file
    assert saved["mixing_embed_dim"] == 4  # the file beats the default
    assert saved["algo"] == "qmix" and saved["double_q"] is False and saved["seed"] == 3
    assert json.loads((run_dir / "config.json").read_text()) == saved
    for name in ("metrics.jsonl", "learning_curve.png", "spec.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    assert load_run(run_dir, "last").step == 200


def test_max_seconds_ends_the_session_before_the_total(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = ["--env", "two_step", *TINY, "--run-dir", str(run_dir), "-q"]
    assert main([*argv, "--total-timesteps", "10000000", "--max-seconds", "0.001"]) == 0
    assert load_run(run_dir, "last").step < 10_000_000  # stopped by the clock, checkpointed


def test_help_has_purpose_and_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Train a cooperative team centrally with QMIX" in out
    assert "example:" in out and "--hidden-dim" in out and "Episodes per learner update" in out


def test_help_needs_no_source_files_and_shows_every_doc(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import inspect

    from qmix_edge.common.settings import docs
    from qmix_edge.train.config import TrainConfig

    def no_source(*args: object, **kwargs: object) -> str:
        raise OSError("could not get source code")  # as on an install without .py files

    monkeypatch.setattr(inspect, "getsource", no_source)
    monkeypatch.setattr(inspect, "getsourcelines", no_source)
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, doc in docs(TrainConfig).items():
        assert doc and doc in out, name
        assert "--" + name.replace("_", "-") in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gamma", "2"], "gamma must be in"),
        (["--env", "no_such_env"], "unknown env id"),
        (["--resume", "/nonexistent/run"], "not a run directory"),
        (["--config", "/nonexistent.yaml"], "cannot read config file"),
        (["--algo", "dqn"], "invalid choice"),
        (["--env", "two_step", "--max-seconds", "0"], "max_seconds must be a positive number"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_existing_run_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    base = ["--env", "two_step", *TINY, "--run-dir", str(run_dir), "-q"]
    assert main([*base, "--total-timesteps", "100"]) == 0
    assert main([*base, "--total-timesteps", "100"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["--resume", str(run_dir), "--total-timesteps", "200", "-q"]) == 0
    assert load_run(run_dir, "last").step == 200


def test_yaml_gives_total_timesteps_and_run_dir_below_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"env: two_step\ntotal_timesteps: 120\nrun_dir: {tmp_path / 'from_yaml'}\nhidden_dim: 8\n"
    )
    assert main(["--config", str(config), *TINY, "-q"]) == 0
    assert load_run(tmp_path / "from_yaml", "last").step == 120
    saved = yaml.safe_load((tmp_path / "from_yaml" / "config.yaml").read_text())
    assert "total_timesteps" not in saved and "run_dir" not in saved  # run keys, not config
    flags = ["--run-dir", str(tmp_path / "from_flag"), "--total-timesteps", "80"]
    assert main(["--config", str(config), *TINY, *flags, "-q"]) == 0
    assert load_run(tmp_path / "from_flag", "last").step == 80
    config.write_text("total_timesteps: -5\n")
    assert main(["--config", str(config)]) == 2
    assert "total_timesteps in" in capsys.readouterr().err


def test_unknown_yaml_key_suggests_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("hiden_dim: 8\ntotal_timestep: 100\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'hiden_dim': Did you mean 'hidden_dim'?" in err
    assert "'total_timestep': Did you mean 'total_timesteps'?" in err


def test_resume_to_a_total_already_reached_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "--env",
                "two_step",
                *TINY,
                "--run-dir",
                str(run_dir),
                "--total-timesteps",
                "100",
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--total-timesteps", "100", "-q"]) == 2
    captured = capsys.readouterr()
    assert "already holds 100 env steps" in captured.err
    assert "env steps/s" not in captured.out  # no success line for a run that trained nothing
    assert load_run(run_dir, "last").step == 100


def test_preset_is_a_layer_under_the_file_and_the_flags(tmp_path: Path) -> None:
    from qmix_edge.train.cli import build_parser, resolve_config

    config = tmp_path / "c.yaml"
    config.write_text("gamma: 0.8\n")
    args = build_parser().parse_args(
        ["--preset", "fast", "--config", str(config), "--batch-size", "16"]
    )
    values = resolve_config(args)
    assert values["optimizer"] == "radam" and values["env_steps_per_update"] == 208  # the preset
    assert values["gamma"] == 0.8  # the file beats the preset
    assert values["batch_size"] == 16  # the flag beats both
    assert main(["--preset", "nope"]) == 2
