"""``qmix-export`` on a real training run: success, signing, exit codes, and a failed parity gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qmix_edge.export import cli, exporter
from qmix_edge.runtime.artifact import Manifest
from qmix_edge.runtime.policy import AgentPolicy


def test_export_run_signed_with_int8(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert cli.main(["keygen", "--out", str(keys)]) == 0
    out = tmp_path / "art"
    code = cli.main(
        [
            str(trained_run),
            "--out",
            str(out),
            "--sign",
            str(keys / "qmix-signing.key"),
            "--quantize",
            "int8",
            "--fallback-action",
            "agent_1=1",
        ]
    )
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"wrote artifact {out}") and "manifest.sig" in last
    assert "action agreement with fp32" in stdout
    manifest = Manifest.load(out, public_key=keys / "qmix-signing.pub")
    run_info = json.loads((trained_run / "run.json").read_text())
    assert manifest.run_id == run_info["run_id"]
    best = json.loads((trained_run / "checkpoints" / "best" / "state.json").read_text())
    assert manifest.step == best["env_steps"]  # the best greedy evaluation's, by default
    assert manifest.env_id == "two_step"
    assert manifest.env_options["n_agents"] == 2  # the game's team, not the default 3 asked for
    assert [a.fallback_action for a in manifest.agents] == [0, 1]
    for a in manifest.agents:
        assert a.parity.sources == ("env", "synthetic")
        (variant,) = a.variants
        assert variant.precision == "int8" and 0.0 <= variant.action_agreement <= 1.0
        policy = AgentPolicy.load(out, a.agent_id, public_key=keys / "qmix-signing.pub")
        assert policy.fallback_action == a.fallback_action
        assert policy.act(np.eye(3, dtype=np.float32)[0]).action in (0, 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_run_picks_a_named_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    ckpts = sorted((trained_run / "checkpoints").glob("step_*"))
    out = tmp_path / "art"
    assert cli.main([str(trained_run), "--out", str(out), "--checkpoint", ckpts[0].name, "-q"]) == 0
    assert Manifest.load(out).step == int(ckpts[0].name.split("_")[1])


def test_export_takes_the_best_evaluation_unless_told_last(
    trained_run: Path, tmp_path: Path
) -> None:
    best = json.loads((trained_run / "checkpoints" / "best" / "state.json").read_text())
    latest = json.loads((trained_run / "checkpoints" / "latest.json").read_text())
    last = latest["env_steps"]
    for choice, step in ((None, best["env_steps"]), ("best", best["env_steps"]), ("last", last)):
        out = tmp_path / f"art-{choice}"
        argv = [str(trained_run), "--out", str(out), "-q", "--no-env"]
        argv += ["--checkpoint", choice] if choice else []
        assert cli.main(argv) == 0
        assert Manifest.load(out).step == step


@pytest.mark.parametrize(
    "extra",
    [
        ["--fallback-action", "x"],
        ["--fallback-action", "7"],
        ["--fallback-action", "nobody=0"],
        ["--quantize", "int4"],
        ["--sign", "/nonexistent/key.pem"],
        ["--checkpoint", "step_999"],
        [],  # without --out
    ],
)
def test_usage_errors_exit_2(trained_run: Path, tmp_path: Path, extra: list[str]) -> None:
    argv = [str(trained_run), *extra]
    if extra:
        argv += ["--out", str(tmp_path / "art")]
    assert cli.main(argv) == 2
    assert not (tmp_path / "art").exists()


def test_missing_run_and_existing_output_exit_2(trained_run: Path, tmp_path: Path) -> None:
    assert cli.main([str(tmp_path / "nope"), "--out", str(tmp_path / "a")]) == 2
    out = tmp_path / "art"
    assert cli.main([str(trained_run), "--out", str(out), "-q", "--no-env"]) == 0
    assert cli.main([str(trained_run), "--out", str(out), "-q", "--no-env"]) == 2
    assert cli.main([str(trained_run), "--out", str(out), "-q", "--no-env", "--force"]) == 0
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert cli.main([str(trained_run), "--out", str(junk), "-q"]) == 2
    assert (junk / "notes.txt").read_text() == "mine"


def test_failed_parity_leaves_nothing_that_looks_good(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "art"
    assert cli.main([str(trained_run), "--out", str(out), "-q", "--no-env"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real_export_graph = exporter.export_graph

    def broken_export_graph(graph: exporter.AgentGraph) -> onnx.ModelProto:
        """An exporter bug: the output bias is off by 1e-3 in the written graph."""
        model = real_export_graph(graph)
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.shape == (graph.n_actions,):
                init.CopyFrom(numpy_helper.from_array(arr + np.float32(1e-3), init.name))
        return model

    monkeypatch.setattr(exporter, "export_graph", broken_export_graph)
    code = cli.main([str(trained_run), "--out", str(out), "-q", "--force", "--no-env"])
    captured = capsys.readouterr()
    assert code == 1
    assert "parity gate failed" in captured.err
    # the previous good artifact is untouched, no partial directory is left around
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]

    fresh = tmp_path / "fresh"
    assert cli.main([str(trained_run), "--out", str(fresh), "-q", "--no-env"]) == 1
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_bug_exits_1_with_its_traceback(
    trained_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("an invariant broke deep inside")

    monkeypatch.setattr(exporter, "export_graph", bug)
    out = tmp_path / "art"
    assert cli.main([str(trained_run), "--out", str(out), "-q", "--no-env"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
    assert "usage" not in err.lower() and not out.exists()
    assert cli.main([str(tmp_path / "no_run"), "--out", str(out), "-q"]) == 2  # a config error
    assert "Traceback" not in capsys.readouterr().err


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    assert cli.main(["keygen", "--out", str(tmp_path)]) == 0
    key = (tmp_path / "qmix-signing.key").read_bytes()
    assert cli.main(["keygen", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "qmix-signing.key").read_bytes() == key
    assert (tmp_path / "qmix-signing.key").stat().st_mode & 0o077 == 0
