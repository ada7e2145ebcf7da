"""A run whose weights hold NaN or inf is refused by name, before any parity recording."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from qmix_edge.export import cli


def _poisoned_copy(trained_run: Path, tmp_path: Path, *, keep_earlier: bool) -> Path:
    """A copy of the run whose latest checkpoint has a NaN in one agent-network weight.

    Such checkpoints came from runs trained before qmix-train refused to write them, or from
    files changed afterwards; qmix-export must still name the cause.
    """
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    # Runs of that time kept no best-evaluation checkpoint: export takes the latest.
    shutil.rmtree(run / "checkpoints" / "best", ignore_errors=True)
    latest = sorted((run / "checkpoints").glob("step_*"))[-1]
    if keep_earlier:
        shutil.copytree(latest, run / "checkpoints" / "step_000000001")
    model = torch.load(latest / "model.pt", weights_only=True)
    weights = model["learner"]["agent_net"]
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[:3] = torch.tensor([torch.nan, torch.inf, 1.0])
    torch.save(model, latest / "model.pt")
    return run


def test_non_finite_weights_are_refused_with_the_layer(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _poisoned_copy(trained_run, tmp_path, keep_earlier=False)
    out = tmp_path / "art"
    assert cli.main([str(run), "--out", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "the checkpoint holds non-finite weights (agent network, layer " in err
    assert "1 NaN, 1 inf of " in err
    assert "No checkpoint of this run has finite weights" in err
    assert not out.exists()


def test_refusal_names_an_earlier_finite_checkpoint(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _poisoned_copy(trained_run, tmp_path, keep_earlier=True)
    assert cli.main([str(run), "--out", str(tmp_path / "art"), "-q"]) == 1
    assert "--checkpoint step_000000001" in capsys.readouterr().err
