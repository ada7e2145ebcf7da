"""A VMAS scenario end to end: qmix-train -> qmix-export -> qmix-eval on ``vmas:balance``.

A tiny budget: what this proves is that VMAS's batched worlds train through the ordinary commands
(the run records the batched engine), that the artifact carries the ``vmas:`` id and its options,
and that the coordinator, stepping one VMAS world as its simulator, reproduces the in-process
reference evaluation exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmix_edge.export.cli import main as export_main
from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.train.cli import main as train_main

pytest.importorskip("vmas")

BALANCE = "vmas:balance"


@pytest.mark.slow
def test_e2e_vmas_train_export_eval(tmp_path: Path) -> None:
    run, art, report = tmp_path / "run", tmp_path / "art", tmp_path / "eval" / "report.json"
    tiny = ["--n-envs", "4", "--batch-size", "4", "--buffer-size", "2000", "--eval-episodes", "2"]
    env = ["--env", BALANCE, "--env-kwargs", '{"max_steps": 10}', "--hidden-dim", "16"]
    run_args = ["--algo", "qmix", "--total-timesteps", "400", "--run-dir", str(run), "-q"]
    assert train_main([*env, *run_args, *tiny]) == 0
    spec = json.loads((run / "spec.json").read_text())
    assert spec["env_id"] == BALANCE and spec["episode_limit"] == 10
    assert [a["agent_id"] for a in spec["agents"]] == ["agent_0", "agent_1", "agent_2"]
    config = json.loads((run / "config.json").read_text())
    assert config["vector"] == "batched"  # every world stepped in one VMAS call
    assert export_main([str(run), "--out", str(art), "-q"]) == 0
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["env_id"] == BALANCE and manifest["env_kwargs"]["max_steps"] == 10
    where = ["--report", str(report), "--workdir", str(tmp_path / "work")]
    patient = ["--step-deadline-ms", "10000"]
    code = eval_main(["--artifacts", str(art), "--episodes", "3", "--seed", "5", *where, *patient])
    assert code == 0
    out = json.loads(report.read_text())
    assert out["parity"]["all_equal"]
    assert [e["seed"] for e in out["episodes"]] == [5, 6, 7]
    assert all(e["return"] == e["reference_return"] for e in out["episodes"])
    assert all(0 < e["steps"] <= 10 for e in out["episodes"])
    assert out["totals"]["fallbacks"] == 0
