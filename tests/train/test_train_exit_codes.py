"""qmix-train and qmix-sweep exit codes: 2 and one line for usage or config errors, 1 and the full
traceback for a bug (an exception nobody expected is never reported as a usage error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmix_edge.train import cli, sweep_cli
from qmix_edge.train.trainer import Trainer


class Bug(RuntimeError):
    pass


def _bug(*args: object, **kwargs: object) -> None:
    raise Bug("an invariant broke deep inside")


@pytest.mark.parametrize("where", ["train", "__init__"])
def test_train_bug_exits_1_with_its_traceback(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Trainer, where, _bug)
    argv = ["--env", "two_step", "--run-dir", str(tmp_path / "run"), "--total-timesteps", "50"]
    assert cli.main([*argv, "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in _bug" in err
    assert "Bug: an invariant broke deep inside" in err
    assert "usage" not in err.lower()


def test_train_usage_and_config_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["--hidden-dim", "0"], ["--agent-network", "lstm"], ["--env", "no_such_env"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip(), argv


def test_sweep_bug_exits_1_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {env: two_step}\nseeds: [0]\ntotal_timesteps: 50\n")
    monkeypatch.setattr(sweep_cli, "run_sweep", _bug)
    assert sweep_cli.main([str(spec), "--out", str(tmp_path / "sw"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "Bug: an invariant broke" in err


def test_sweep_config_error_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {hiden_dim: 8}\nseeds: [0]\ntotal_timesteps: 50\n")
    assert sweep_cli.main([str(spec), "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "hiden_dim" in err
