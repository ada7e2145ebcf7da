"""Env stepping speed: bare mpe2 simple_spread vs our adapter vs SyncVectorEnv vs SubprocVectorEnv.

Prints env steps/s (one env step = one joint action in one env) with random actions, and each
figure's ratio to the bare PettingZoo env measured in the same run. No learning involved: this shows
the adapter's overhead and what worker processes buy on this machine.

    .venv/bin/python bench/env_vector_speed.py [--seconds 3] [--n-envs 8 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from qmix_edge.envs import make_env, make_vector_env


def bare_rate(seconds: float) -> float:
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env()
    env.reset(seed=0)
    agents = list(env.possible_agents)
    acts = np.random.default_rng(0).integers(0, 5, (4096, len(agents))).tolist()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        row = acts[steps % 4096]
        env.step({a: row[i] for i, a in enumerate(agents)})
        steps += 1
        if not env.agents:
            env.reset()
    return steps / (time.perf_counter() - t0)


def adapter_rate(seconds: float) -> float:
    env = make_env("simple_spread")
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 5, (4096, 3))
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        res = env.step(acts[steps % 4096])
        steps += 1
        if res.done:
            env.reset()
    return steps / (time.perf_counter() - t0)


def vector_rate(backend: str, n_envs: int, workers: int, seconds: float) -> float:
    vec = make_vector_env("simple_spread", n_envs, backend=backend, n_workers=workers)
    try:
        vec.reset_all(list(range(n_envs)))
        rng = np.random.default_rng(0)
        vec.step(rng.integers(0, 5, (n_envs, 3)))  # warm-up
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            res = vec.step(rng.integers(0, 5, (n_envs, 3)))
            steps += int(res.active.sum())
            done = np.flatnonzero(vec.finished)
            if done.size:
                vec.reset_envs(done)
        return steps / (time.perf_counter() - t0)
    finally:
        vec.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seconds", type=float, default=3.0, help="measuring time per figure (default 3)"
    )
    p.add_argument(
        "--n-envs", type=int, nargs="+", default=[8, 16], help="vector sizes (default 8 16)"
    )
    p.add_argument("--workers", type=int, default=2, help="subprocess workers (default 2)")
    p.add_argument(
        "--repeat", type=int, default=2, help="best of this many runs per figure (default 2)"
    )
    args = p.parse_args(argv)

    def best(fn: Callable[[], float]) -> float:
        return max(fn() for _ in range(args.repeat))

    sec = args.seconds
    load = os.getloadavg()[0]
    bare = best(lambda: bare_rate(sec))
    rows = [("bare mpe2 simple_spread, 1 process", bare)]
    rows.append(("PettingZooTeamEnv adapter, 1 env", best(lambda: adapter_rate(sec))))
    for n in args.n_envs:
        rows.append((f"SyncVectorEnv n_envs={n}", best(lambda n=n: vector_rate("sync", n, 1, sec))))
        rows.append(
            (
                f"SubprocVectorEnv n_envs={n} workers={args.workers}",
                best(lambda n=n: vector_rate("subproc", n, args.workers, sec)),
            )
        )
    print(
        f"load average before the run: {load:.2f} on {os.cpu_count()} CPUs (figures are wall time)"
    )
    print(f"{'configuration':<45} {'env steps/s':>12} {'vs bare':>8}")
    for name, rate in rows:
        print(f"{name:<45} {rate:>12,.0f} {rate / bare:>7.2f}x")
    print("(random actions; one env step = one joint action in one env; 3 agents)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
