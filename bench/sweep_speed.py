"""Sweep overhead: 4 seeds through the Ray sweep against the same 4 runs back to back.

Both sides run the same trials (`qmix_edge.train.sweep.run_trial`, one torch thread, in-process
envs) on this machine's cores: the baseline one after another in this process, the sweep as Ray
tasks on a local Ray of ``--cores`` CPUs (one trial per CPU). Prints each side's wall time, Ray's
start-up, the ratio sweep / back-to-back, and the ratio against the ideal (back-to-back divided by
the cores, i.e. perfect parallelism with zero overhead); the goal is at most 1.2x that ideal. Also
checks that the sweep's per-seed results equal the back-to-back runs'. The load average is printed
before and after: on a shared machine other work inflates both sides. The config is ``--preset``
(default ``epymarl``, EPyMARL's QMIX settings, under which LBF 8x8 learns) with ``--set`` values
over it, so the equality is shown on runs whose returns are not all zero.

Takes minutes: run it in the background, e.g.

    nohup .venv/bin/python bench/sweep_speed.py --out /tmp/sweep_bench > sweep_speed.txt 2>&1 &
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from robots_benchmark import add_config_flags, config_of, load

from qmix_edge.envs.ray_session import ray_session
from qmix_edge.train.sweep import SweepSpec, run_sweep, run_trial, trials_of

GOAL = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="lbforaging:Foraging-8x8-2p-2f-coop-v3")
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per run")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cores", type=int, default=2)
    add_config_flags(parser)
    parser.add_argument("--out", type=Path, default=Path("/tmp/qmix_sweep_bench"))
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    preset, overrides = config_of(args)
    base = {
        **preset,
        "env": args.env,
        "algo": "qmix",
        "n_envs": 8,
        "vector": "sync",
        "torch_threads": 1,
        "eval_interval": max(args.steps // 4, 1),
        "eval_episodes": 32,
        "checkpoint_interval": 0,
        **overrides,
    }
    spec = SweepSpec(base=base, seeds=tuple(range(args.seeds)), total_timesteps=args.steps)
    print(f"{args.seeds} runs of {args.steps} env steps, QMIX on {args.env}, {args.cores} cores")
    print(f"config: preset {args.preset}, {base}")
    print(f"load average before: {load()}", flush=True)

    t0 = time.perf_counter()
    alone = []
    for t in trials_of(spec, args.out / "back_to_back"):
        alone.append(run_trial(t))
    sequential = time.perf_counter() - t0
    print(f"back to back: {sequential:.1f} s; load average: {load()}", flush=True)

    t0 = time.perf_counter()
    with ray_session(num_cpus=args.cores):
        ray_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        outcome = run_sweep(spec, args.out / "sweep")
        swept = time.perf_counter() - t1
    total = time.perf_counter() - t0
    print(f"sweep: {swept:.1f} s of trials + {ray_start:.1f} s Ray start-up = {total:.1f} s")
    print(f"load average after: {load()}")

    ideal = sequential / args.cores
    print(
        f"ratio sweep / back to back: {total / sequential:.2f}x (trials only {swept / sequential:.2f}x)"
    )
    print(
        f"ratio sweep / ideal ({args.cores}-core perfect split of the back-to-back time): "
        f"{total / ideal:.2f}x with Ray start-up, {swept / ideal:.2f}x without "
        f"(goal <= {GOAL}x): {'met' if total / ideal <= GOAL else 'NOT met'}"
    )
    same = [
        (r["final_return"], r["best_return"], [p[2] for p in r["curve"]]) for r in outcome.results
    ] == [(r["final_return"], r["best_return"], [p[2] for p in r["curve"]]) for r in alone]
    print(f"per-seed results equal to the back-to-back runs: {same}")
    for r, a in zip(outcome.results, alone, strict=True):
        print(
            f"  seed {r['seed']}: final greedy return {r['final_return']:.3f} (one by one "
            f"{a['final_return']:.3f}), best {r['best_return']:.3f} (one by one {a['best_return']:.3f})"
        )


if __name__ == "__main__":
    main()
