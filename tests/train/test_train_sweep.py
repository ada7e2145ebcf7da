"""Sweeps on a local Ray: 2 configs x 2 seeds on the two-step game, stopped, resumed, compared.

Ray is started once for the module (its start-up costs seconds). Trials run as Ray tasks in worker
processes; the one-by-one baseline runs the same trials in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import tiny

from qmix_edge.train.errors import ConfigError
from qmix_edge.train.sweep import (
    RESULT_FILE,
    SweepSpec,
    Trial,
    load_sweep_file,
    parse_seeds,
    run_sweep,
    run_trial,
    trials_of,
)
from qmix_edge.train.trainer import Trainer

pytest.importorskip("ray")

BASE = tiny(
    env="two_step",
    gamma=0.99,
    epsilon_start=1.0,
    epsilon_end=1.0,
    hypernet_layers=1,
    batch_size=16,
    n_envs=8,
    target_update_freq=50,
    eval_episodes=1,
    eval_interval=400,
    checkpoint_interval=800,
)
SPEC = SweepSpec(
    base=BASE, grid={"algo": ["qmix", "vdn"]}, seeds=(0, 1), total_timesteps=1600, target_return=7.0
)


@pytest.fixture(scope="module")
def ray_local():
    from qmix_edge.envs.ray_session import ray_session

    with ray_session(num_cpus=2):
        yield


def _files(trial: Trial) -> dict[str, bytes]:
    d = Path(trial.run_dir)
    return {n: (d / n).read_bytes() for n in (RESULT_FILE, "metrics.jsonl", "run.json")}


def _comparable(result: dict) -> tuple:
    """What must not depend on how the trial was run (wall times may)."""
    curve = [(p[0], p[2]) for p in result["curve"]]
    return (result["final_return"], result["best_return"], result["steps_to_target"], curve)


@pytest.mark.slow
def test_sweep_stops_resumes_and_equals_runs_one_by_one(ray_local, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    trials = trials_of(SPEC, sweep)
    assert [t.name for t in trials] == [
        "c00_algo-qmix/s0",
        "c00_algo-qmix/s1",
        "c01_algo-vdn/s0",
        "c01_algo-vdn/s1",
    ]
    records: list[dict] = []
    first = run_sweep(SPEC, sweep, max_trials=2, on_progress=records.append)
    assert first.ran == ["c00_algo-qmix/s0", "c00_algo-qmix/s1"] and not first.failed
    assert first.pending == ["c01_algo-vdn/s0", "c01_algo-vdn/s1"] and not first.complete
    assert [r["done"] for r in records] == [0, 1, 2] and records[-1]["running"] == 0
    assert records[-1]["best"]["final_return"] == max(r["final_return"] for r in first.results)
    table = (sweep / "results.md").read_text()
    assert "| 2/2 |" in table and "| 0/2 |" in table

    # A trial killed after its first checkpoint: half its budget done, no result.
    killed = trials[2]
    Trainer(config=killed.config, run_dir=killed.run_dir).train(total_timesteps=800)
    killed_run_id = json.loads((Path(killed.run_dir) / "run.json").read_text())["run_id"]
    done_before = {t.name: _files(t) for t in trials[:2]}

    second = run_sweep(SPEC, sweep)
    assert second.complete and second.skipped == ["c00_algo-qmix/s0", "c00_algo-qmix/s1"]
    assert second.ran == ["c01_algo-vdn/s0", "c01_algo-vdn/s1"]
    for t in trials[:2]:  # finished trials were not rerun: their files are untouched
        assert _files(t) == done_before[t.name]
    # The killed trial continued its own run from the checkpoint (same run id, steps 400 and 800
    # evaluated once each), it did not start again.
    assert json.loads((Path(killed.run_dir) / "run.json").read_text())["run_id"] == killed_run_id
    steps = [p[0] for p in json.loads((Path(killed.run_dir) / RESULT_FILE).read_text())["curve"]]
    assert steps == [0, 400, 800, 1200, 1600]  # every run is also evaluated at step 0

    # The same trials one by one, in this process, give the same per-seed results.
    alone = [
        run_trial(Trial(t.config_name, t.seed, t.config, str(tmp_path / "one" / t.name), 1600, 7.0))
        for t in trials
    ]
    assert [_comparable(r) for r in second.results] == [_comparable(r) for r in alone]
    # The two-step game's known answer (QMIX finds 8, VDN settles for 7) shows they learned.
    assert [r["final_return"] for r in second.results] == [8.0, 8.0, 7.0, 7.0]

    rows = (sweep / "results.csv").read_text().strip().splitlines()
    assert rows[0].startswith("config,seeds_done,final_mean") and len(rows) == 3
    assert rows[1].startswith("c00_algo-qmix,2/2,8.0,0.0,8.0")
    assert rows[2].startswith("c01_algo-vdn,2/2,7.0,0.0,7.0")
    assert (sweep / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((sweep / "progress.json").read_text())["done"] == 4


def test_sweep_spec_and_seeds_errors(tmp_path: Path) -> None:
    assert parse_seeds("0,2-4") == [0, 2, 3, 4]
    with pytest.raises(ConfigError, match="seeds must look like"):
        parse_seeds("a,b")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['lr'\] in the sweep's grid"):
        SweepSpec(base={"env": "two_step"}, grid={"lr": [1e-3]})
    with pytest.raises(ConfigError, match="'seed' does not belong"):
        SweepSpec(base={"seed": 3})
    with pytest.raises(ConfigError, match="non-empty list"):
        SweepSpec(grid={"algo": "qmix"})
    with pytest.raises(ConfigError, match="algo must be one of"):
        SweepSpec(grid={"algo": ["qmix", "qtran"]})
    f = tmp_path / "s.yaml"
    f.write_text("base: {env: two_step}\ngrid: {algo: [qmix, vdn]}\nseeds: [1, 2]\nbudget: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['budget'\]"):
        load_sweep_file(f)
    f.write_text("base: {env: two_step}\ngrid: {algo: [qmix, vdn]}\nseeds: [1, 2]\n")
    assert [n for n, _ in load_sweep_file(f).configs()] == ["c00_algo-qmix", "c01_algo-vdn"]


def test_sweep_directory_refuses_a_different_sweep(tmp_path: Path) -> None:
    from qmix_edge.train.sweep import prepare_sweep_dir

    prepare_sweep_dir(SPEC, tmp_path)
    prepare_sweep_dir(SPEC, tmp_path)  # the same sweep: a resume
    other = SweepSpec(base=BASE, grid={"algo": ["qmix"]}, seeds=(0, 1), total_timesteps=1600)
    with pytest.raises(
        ConfigError, match=r"different sweep \(changed: \['grid', 'target_return'\]\)"
    ):
        prepare_sweep_dir(other, tmp_path)


@pytest.mark.slow
def test_sweep_commands_run_and_resume(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qmix_edge.train.cli import main as train_main
    from qmix_edge.train.sweep_cli import main as sweep_main

    small = {**BASE, "eval_interval": 200, "checkpoint_interval": 0}
    f = tmp_path / "grid.yaml"
    f.write_text(
        json.dumps({"base": small, "grid": {"algo": ["vdn"]}, "seeds": [3], "total_timesteps": 200})
    )
    assert sweep_main([str(f), "--out", str(tmp_path / "s"), "-q"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2] == "trials: 1 run now, 0 finished before, 0 failed, 0 left for later"
    assert out[-1].startswith(f"wrote sweep to {tmp_path / 's'}/")
    assert (tmp_path / "s" / "trials" / "c00_algo-vdn" / "s3" / RESULT_FILE).exists()

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in small.items() if k != "env"]
    argv = ["--env", "two_step", "--seeds", "0,1", "--total-timesteps", "200", "-q", *flags]
    argv += ["--run-dir", str(tmp_path / "seeds")]
    assert train_main(argv) == 0
    assert "trials: 2 run now, 0 finished before" in capsys.readouterr().out
    assert train_main(argv) == 0  # the same command again: nothing left to run
    assert "trials: 0 run now, 2 finished before" in capsys.readouterr().out
    assert sweep_main([str(tmp_path / "seeds"), "-q"]) == 0  # a sweep directory resumes too
    assert train_main([*argv, "--hidden-dim", "32"]) == 2  # not the same sweep
    assert "holds a different sweep" in capsys.readouterr().err


def test_train_with_ray_env_workers_equals_subprocess_workers(ray_local, tmp_path: Path) -> None:
    cfg = tiny(env="masked_choice", n_agents=2, n_envs=4, eval_interval=200, batch_size=4)
    runs = {
        kind: Trainer(config={**cfg, "vector": kind}, run_dir=tmp_path / kind).train(400)
        for kind in ("subprocess", "ray")
    }
    assert runs["ray"]["mean_reward"] == runs["subprocess"]["mean_reward"]
    curves = {k: (tmp_path / k / "metrics.jsonl").read_text().splitlines() for k in runs}
    strip = [
        {k: v for k, v in json.loads(line).items() if not k.startswith("time")}
        for line in curves["ray"]
    ]
    want = [
        {k: v for k, v in json.loads(line).items() if not k.startswith("time")}
        for line in curves["subprocess"]
    ]
    assert strip == want
