"""EPyMARL's robot tasks end to end: qmix-train -> qmix-export -> qmix-eval on level-based foraging
and the multi-robot warehouse.

A tiny budget: what this proves is that a Gymnasium multi-agent env (Tuple spaces, per-agent rewards)
goes the whole way (the coordinator and the reference evaluation remake it from the manifest's
``lbforaging:...`` or ``rware:...`` id and the env kwargs) and that decentralised execution reproduces
the reference exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmix_edge.export.cli import main as export_main
from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.train.cli import main as train_main

LBF = "lbforaging:Foraging-5x5-2p-1f-coop-v3"
RWARE = "rware:rware-tiny-2ag-v2"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [(LBF, '{"max_episode_steps": 20}'), (RWARE, '{"max_steps": 20}')],
    ids=["lbforaging", "rware"],
)
def test_e2e_robot_task_train_export_eval(tmp_path: Path, env_id: str, env_kwargs: str) -> None:
    run, art, report = tmp_path / "run", tmp_path / "art", tmp_path / "eval" / "report.json"
    tiny = ["--n-envs", "2", "--batch-size", "4", "--buffer-size", "2000", "--eval-episodes", "2"]
    limit = ["--env-kwargs", env_kwargs, "--hidden-dim", "16"]
    run_args = ["--algo", "qmix", "--total-timesteps", "400", "--run-dir", str(run), "-q"]
    code = train_main(["--env", env_id, *run_args, *limit, *tiny])
    assert code == 0
    spec = json.loads((run / "spec.json").read_text())
    assert spec["env_id"] == env_id and spec["episode_limit"] == 20
    assert [a["agent_id"] for a in spec["agents"]] == ["agent_0", "agent_1"]
    assert export_main([str(run), "--out", str(art), "-q"]) == 0
    manifest = json.loads((art / "manifest.json").read_text())
    assert env_id in json.dumps(manifest)  # the env id travels with the artifact
    where = ["--report", str(report), "--workdir", str(tmp_path / "work")]
    patient = ["--step-deadline-ms", "10000"]
    code = eval_main(["--artifacts", str(art), "--episodes", "3", "--seed", "5", *where, *patient])
    assert code == 0
    out = json.loads(report.read_text())
    assert out["parity"]["all_equal"]
    assert [e["seed"] for e in out["episodes"]] == [5, 6, 7]
    assert all(e["return"] == e["reference_return"] for e in out["episodes"])
    assert out["totals"]["fallbacks"] == 0
