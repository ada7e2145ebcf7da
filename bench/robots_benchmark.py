"""QMIX and VDN on EPyMARL's robot tasks, a few seeds each, run through the Ray sweep.

Tasks (the EPyMARL benchmark's own ids and episode limits, from the packages' registrations):
level-based foraging ``Foraging-8x8-2p-2f-coop-v3`` and ``Foraging-10x10-3p-3f-v3`` (50 steps) and
the multi-robot warehouse ``rware-tiny-2ag-v2`` (500 steps). Each (task, algorithm) is one config
of a sweep (`qmix_edge.train.sweep`), ``--seeds`` seeds each; the LBF tasks get ``--steps`` env
steps per run and RWARE ``--rware-steps`` (two sweeps, each directory with its own table and
curves). The config is the ``--preset`` (default ``epymarl``: EPyMARL's own QMIX/VDN settings, see
`qmix_edge.train.config`) with the ``--set`` overrides on top. This script then prints our greedy
returns (mean ± std across seeds of the final evaluation, and of each run's best) beside the
published figures of

    G. Papoudakis, F. Christianos, L. Schäfer, S. V. Albrecht. "Benchmarking Multi-Agent Deep
    Reinforcement Learning Algorithms in Cooperative Tasks". NeurIPS 2021 Datasets and Benchmarks
    Track (arXiv:2006.07869), Table 3 (maximum returns over five seeds, with parameter sharing).

`PUBLISHED` holds those figures where they have been copied in from a page that was read; an entry
that is None is printed as "not copied" rather than guessed. `PAPER_SETUP` records what is known of
the paper's setup for each task (env version, env steps per run) and where that came from. Our
budget is smaller than theirs (see bench/README.md): our figures are what this budget reaches.

Takes hours: run it in the background at low priority, e.g.

    nohup nice -n 19 .venv/bin/python bench/robots_benchmark.py --out /tmp/robots > robots.txt 2>&1 &

Resumable: run the same command again to continue a stopped benchmark.

``--speed`` measures instead where a training run's time goes on one task (``--speed-env``): the
bare Gymnasium env's step, the same env behind our team adapter, one learner update of the
preset's batch, and whole training runs (no evaluation) with in-process and worker-process envs
for a few ``n_envs``, each with the load average at the time.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qmix_edge.envs import make_env
from qmix_edge.train import Trainer
from qmix_edge.train.config import preset_values
from qmix_edge.train.sweep import SweepOutcome, SweepSpec, run_sweep
from qmix_edge.train.sweep_report import mean_std

LBF_TASKS = ("lbforaging:Foraging-8x8-2p-2f-coop-v3", "lbforaging:Foraging-10x10-3p-3f-v3")
RWARE_TASKS = ("rware:rware-tiny-2ag-v2",)
TASKS = LBF_TASKS + RWARE_TASKS
ALGOS = ("qmix", "vdn")

PUBLISHED: dict[tuple[str, str], str | None] = {(t, a): None for t in TASKS for a in ALGOS}
"""(task, algo) -> the paper's Table 3 figure as printed there (e.g. "0.96 ± 0.01"), or None.

None everywhere: the paper's tables could not be read from this machine (the stored copies of the
paper give only its opening page; see bench/README.md for what was searched). A figure recalled
from memory is not a citation."""

PAPER_SETUP: dict[str, dict[str, str]] = {
    "lbforaging": {
        "paper env": "lbforaging v1 ids (e.g. Foraging-8x8-2p-2f-coop-v1); ours v3",
        "paper env steps per run": "2M (off-policy)",
        "source": "EPyMARL src/config/envs/gymma.yaml t_max 2,050,000; epymarl issue #3 (a "
        "reproduction of the paper's LBF runs at 2M steps, Foraging-*-v1)",
    },
    "rware": {
        "paper env": "rware v1 ids (rware-tiny-2ag-v1); ours v2",
        "paper env steps per run": "4M (off-policy)",
        "source": "epymarl issue #24 (maintainer: on-policy steps are plotted divided by 10, the "
        "RWARE axis ends at 4e6; rware-tiny-2ag-v1)",
    },
}
"""What is known of the paper's setup per env package, and where it was read (not the paper)."""


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (``--set``) -> config overrides, each value read as YAML."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes key=value (a TrainConfig key); found {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--preset`` (default epymarl) and ``--set KEY=VALUE`` (repeatable) over it."""
    parser.add_argument("--preset", default="epymarl", help="a TrainConfig preset, or 'none'")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value over the preset (repeatable), e.g. --set updates_per_episode=4",
    )


def config_of(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the preset's values with the ``--set`` overrides on top, the overrides alone)."""
    base = {} if args.preset == "none" else preset_values(args.preset)
    overrides = parse_sets(args.set)
    return {**base, **overrides}, overrides


def load() -> str:
    """The load averages (1, 5, 15 min), as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def sweep_of(
    tasks: tuple[str, ...],
    steps: int,
    seeds: int,
    base: dict[str, Any],
    evals: int,
    algos: tuple[str, ...] = ALGOS,
) -> SweepSpec:
    return SweepSpec(
        base={
            **base,
            "torch_threads": 1,
            "eval_interval": max(steps // evals, 1),
            "checkpoint_interval": max(steps // 4, 1),
        },
        grid={"env": list(tasks), "algo": list(algos)},
        seeds=tuple(range(seeds)),
        total_timesteps=steps,
    )


def rows(spec: SweepSpec, outcome: SweepOutcome, seeds: int) -> list[str]:
    out = []
    for name, values in spec.configs():
        mine = [r for r in outcome.results if r["config"] == name]
        fm, fs = mean_std([r["final_return"] for r in mine])
        bm, bs = mean_std([r["best_return"] for r in mine])
        paper = PUBLISHED.get((values["env"], values["algo"])) or "not copied"
        package = values["env"].split(":")[0]
        cells = [
            values["env"].split(":")[-1],
            values["algo"],
            f"{len(mine)}/{seeds}",
            f"{spec.total_timesteps:,}",
            "-" if math.isnan(fm) else f"{fm:.3f} ± {fs:.3f}",
            "-" if math.isnan(bm) else f"{bm:.3f} ± {bs:.3f}",
            paper,
            PAPER_SETUP.get(package, {}).get("paper env steps per run", "?"),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def bare_env_us_per_step(gym_id: str, steps: int) -> float:
    """Microseconds per step of the registered Gymnasium env itself, random actions."""
    import gymnasium as gym

    env = gym.make(gym_id, disable_env_checker=True)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, done, truncated, _ = env.step(env.action_space.sample())
        if (np.all(done) if isinstance(done, list | tuple) else done) or truncated:
            env.reset(seed=int(rng.integers(2**31)))
    elapsed = time.perf_counter() - t0
    env.close()
    return elapsed / steps * 1e6


def team_env_us_per_step(env_id: str, steps: int) -> float:
    """Microseconds per step of the same env as our team env (the adapter's checks included)."""
    env = make_env(env_id)
    rng = np.random.default_rng(0)
    view = env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(steps):
        scores = np.where(view.avail, rng.random(view.avail.shape), -1.0)
        result = env.step(scores.argmax(axis=1))
        view = env.reset(seed=i + 1) if result.done else result.next
    elapsed = time.perf_counter() - t0
    env.close()
    return elapsed / steps * 1e6


def speed(args: argparse.Namespace, base: dict[str, Any]) -> None:
    """Where the time of a training run goes (see the module docstring)."""
    env_id, steps = args.speed_env, args.speed_steps
    gym_id = env_id.split(":")[-1]
    __import__(env_id.split(":")[0])  # registers the ids
    print(f"{env_id}: load average {load()}", flush=True)
    print(f"bare Gymnasium env: {bare_env_us_per_step(gym_id, steps // 4):.0f} µs per env step")
    print(f"our team env over it: {team_env_us_per_step(env_id, steps // 4):.0f} µs per env step")
    config = {
        **base,
        "env": env_id,
        "eval_interval": 10**9,
        "eval_episodes": 1,
        "checkpoint_interval": 0,
        "log_interval": 10**9,
    }
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config=config, run_dir=Path(tmp) / "update")
        limit = trainer.episode_limit
        trainer.train(total_timesteps=trainer.config.min_episodes_to_learn * limit + limit)
        batch = trainer.config.batch_size
        t0 = time.perf_counter()
        for _ in range(20):
            trainer.learner.update(trainer.replay.sample(batch))
        update_ms = (time.perf_counter() - t0) / 20 * 1e3
        per_step = update_ms / limit * trainer.config.updates_per_episode * 1e3
        print(
            f"one learner update ({batch} episodes of {limit} steps): {update_ms:.1f} ms, i.e. "
            f"{per_step:.0f} µs per env step at {trainer.config.updates_per_episode:g} update(s) "
            f"per episode; load average {load()}",
            flush=True,
        )
        for vector, n_envs in (("sync", 8), ("sync", 16), ("subprocess", 8), ("subprocess", 16)):
            run = Trainer(
                config={**config, "vector": vector, "n_envs": n_envs},
                run_dir=Path(tmp) / f"{vector}{n_envs}",
            )
            out = run.train(total_timesteps=steps)
            print(
                f"training {steps:,} env steps, vector {vector}, n_envs {n_envs}: "
                f"{out['steps_per_s']:.0f} env steps/s; load average {load()}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per LBF run")
    parser.add_argument("--rware-steps", type=int, default=500_000, help="env steps per RWARE run")
    parser.add_argument("--seeds", type=int, default=3)
    add_config_flags(parser)
    parser.add_argument("--evals", type=int, default=10, help="greedy evaluations per run")
    parser.add_argument("--cores", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/qmix_robots_bench"))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated env ids")
    parser.add_argument(
        "--algos", default=",".join(ALGOS), help=f"comma-separated, of {', '.join(ALGOS)}"
    )
    parser.add_argument("--speed", action="store_true", help="measure where the time goes")
    parser.add_argument("--speed-env", default=LBF_TASKS[0], help="the task --speed measures")
    parser.add_argument("--speed-steps", type=int, default=20_000, help="env steps per --speed run")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    algos = tuple(a for a in args.algos.split(",") if a)
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown or not algos:
        parser.error(
            f"--algos takes a comma-separated subset of {', '.join(ALGOS)}; got {args.algos!r}"
        )
    base, overrides = config_of(args)
    if args.speed:
        speed(args, base)
        return
    lbf = tuple(t for t in tasks if t in LBF_TASKS)
    rware = tuple(t for t in tasks if t not in LBF_TASKS)
    sweeps = [
        (label, sweep_of(chosen, steps, args.seeds, base, args.evals, algos))
        for label, chosen, steps in (("lbf", lbf, args.steps), ("rware", rware, args.rware_steps))
        if chosen
    ]
    print(
        f"tasks {tasks} x {algos} x {args.seeds} seeds; {args.steps:,} env steps per LBF run, "
        f"{args.rware_steps:,} per RWARE run; preset {args.preset}, overrides {overrides}"
    )
    table = [
        "| task | algo | seeds | env steps per run | final greedy return | best greedy return "
        "| paper (Table 3) | paper env steps per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, spec in sweeps:
        print(f"[{label}] load average before: {load()}", flush=True)
        t0 = time.perf_counter()
        outcome = run_sweep(
            spec, args.out / label, ray_address=args.ray_address, num_cpus=args.cores
        )
        print(
            f"[{label}] sweep wall time: {time.perf_counter() - t0:.0f} s; load average after: "
            f"{load()}; directory {outcome.sweep_dir} (results.md, curves.png)",
            flush=True,
        )
        table += rows(spec, outcome, args.seeds)
        if not outcome.complete:
            print(f"[{label}] not complete: failed {outcome.failed}, pending {outcome.pending}")
    print()
    print("\n".join(table))
    print()
    for package, setup in PAPER_SETUP.items():
        print(f"{package}: " + "; ".join(f"{k}: {v}" for k, v in setup.items()))
    if any(t in LBF_TASKS for t in tasks):
        print(
            "lbforaging's team return is at most 1.0: each food item's reward is its level over "
            "the total level spawned, shared among the agents loading it (normalize_reward, on by "
            "default), so a mean of 1.000 is at least any figure a paper can report"
        )


if __name__ == "__main__":
    main()
