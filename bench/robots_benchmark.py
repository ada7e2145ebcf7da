"""QMIX and VDN on EPyMARL's robot tasks, a few seeds each, run through the Ray sweep.

Tasks (the EPyMARL benchmark's own ids and episode limits, from the packages' registrations):
level-based foraging ``Foraging-8x8-2p-2f-coop-v3`` and ``Foraging-10x10-3p-3f-v3`` (50 steps) and
the multi-robot warehouse ``rware-tiny-2ag-v2`` (500 steps). Each (task, algorithm) is one config
of a sweep (`qmix_edge.train.sweep`), ``--seeds`` seeds each, ``--steps`` env steps per run; the
sweep directory gets its own table and curves. This script then prints our greedy returns (mean ±
std across seeds of the final evaluation, and of each run's best) beside the published figures of

    G. Papoudakis, F. Christianos, L. Schäfer, S. V. Albrecht. "Benchmarking Multi-Agent Deep
    Reinforcement Learning Algorithms in Cooperative Tasks". NeurIPS 2021 Datasets and Benchmarks
    Track (arXiv:2006.07869), Table 3 (maximum returns over five seeds, with parameter sharing).

`PUBLISHED` holds those figures where they have been copied in; an entry that is None is printed as
"not copied" rather than guessed. Their budget is far larger than ours (see bench/README.md): our
figures are what this budget reaches, not a reproduction.

Takes a long time: run it in the background, e.g.

    nohup .venv/bin/python bench/robots_benchmark.py --out /tmp/robots > robots.txt 2>&1 &

Resumable: run the same command again to continue a stopped benchmark.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from qmix_edge.train.sweep import SweepSpec, run_sweep
from qmix_edge.train.sweep_report import mean_std

TASKS = (
    "lbforaging:Foraging-8x8-2p-2f-coop-v3",
    "lbforaging:Foraging-10x10-3p-3f-v3",
    "rware:rware-tiny-2ag-v2",
)
ALGOS = ("qmix", "vdn")

PUBLISHED: dict[tuple[str, str], str | None] = {(t, a): None for t in TASKS for a in ALGOS}
"""(task, algo) -> the paper's Table 3 figure as printed there (e.g. "0.96 ± 0.01"), or None."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=None, help="CPUs of the local Ray")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/qmix_robots_bench"))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated env ids")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    spec = SweepSpec(
        base={
            "n_envs": 8,
            "vector": "sync",
            "torch_threads": 1,
            "eval_interval": max(args.steps // 10, 1),
            "eval_episodes": 32,
            "checkpoint_interval": max(args.steps // 4, 1),
        },
        grid={"env": tasks, "algo": list(ALGOS)},
        seeds=tuple(range(args.seeds)),
        total_timesteps=args.steps,
    )
    print(f"{len(tasks)} tasks x {ALGOS} x {args.seeds} seeds, {args.steps} env steps per run")
    print(f"load average before: {os.getloadavg()}")
    t0 = time.perf_counter()
    outcome = run_sweep(spec, args.out, ray_address=args.ray_address, num_cpus=args.cores)
    print(
        f"sweep wall time: {time.perf_counter() - t0:.0f} s; load average after: {os.getloadavg()}"
    )
    print(f"sweep directory: {outcome.sweep_dir} (results.md, curves.png)\n")
    print("| task | algo | seeds | final greedy return | best greedy return | paper (Table 3) |")
    print("|---|---|---|---|---|---|")
    configs = dict(spec.configs())
    for name, values in configs.items():
        mine = [r for r in outcome.results if r["config"] == name]
        fm, fs = mean_std([r["final_return"] for r in mine])
        bm, bs = mean_std([r["best_return"] for r in mine])
        paper = PUBLISHED.get((values["env"], values["algo"])) or "not copied"
        cells = [
            values["env"].split(":")[-1],
            values["algo"],
            f"{len(mine)}/{args.seeds}",
            "-" if math.isnan(fm) else f"{fm:.3f} ± {fs:.3f}",
            "-" if math.isnan(bm) else f"{bm:.3f} ± {bs:.3f}",
            paper,
        ]
        print("| " + " | ".join(cells) + " |")
    if not outcome.complete:
        print(f"\nnot complete: failed {outcome.failed}, pending {outcome.pending}")


if __name__ == "__main__":
    main()
