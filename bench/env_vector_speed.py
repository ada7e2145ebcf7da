"""Env stepping speed: bare mpe2 simple_spread vs our adapter vs SyncVectorEnv vs SubprocVectorEnv.

Prints, with random actions, env steps/s (one env step = one joint action in one env; wall time)
and the CPU time this (the parent) process spends per env step, each with its ratio to the bare
PettingZoo env measured in the same run. The CPU column is what matters for training: what the
parent spends on envs is taken from the learner, and it does not depend on how busy the machine is.

    .venv/bin/python bench/env_vector_speed.py [--seconds 3] [--n-envs 8 16] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from qmix_edge.envs import make_env, make_vector_env


class Figure(NamedTuple):
    rate: float
    """env steps per wall second"""
    parent_cpu_us: float
    """CPU microseconds of this process per env step"""


def _measure(seconds: float, step: Callable[[int], int]) -> Figure:
    """Call ``step(i)`` (returns env steps done) until ``seconds`` of wall time have passed."""
    steps, i = 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        steps += step(i)
        i += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Figure(steps / wall, cpu / steps * 1e6)


def bare(seconds: float) -> Figure:
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env()
    env.reset(seed=0)
    agents = list(env.possible_agents)
    acts = np.random.default_rng(0).integers(0, 5, (4096, len(agents))).tolist()

    def step(i: int) -> int:
        row = acts[i % 4096]
        env.step({a: row[k] for k, a in enumerate(agents)})
        if not env.agents:
            env.reset()
        return 1

    return _measure(seconds, step)


def adapter(seconds: float) -> Figure:
    env = make_env("simple_spread")
    env.reset(seed=0)
    acts = np.random.default_rng(0).integers(0, 5, (4096, 3))

    def step(i: int) -> int:
        if env.step(acts[i % 4096]).done:
            env.reset()
        return 1

    return _measure(seconds, step)


def vector(backend: str, n_envs: int, workers: int, seconds: float) -> Figure:
    vec = make_vector_env("simple_spread", n_envs, backend=backend, n_workers=workers)
    try:
        vec.reset_all(list(range(n_envs)))
        acts = np.random.default_rng(0).integers(0, 5, (512, n_envs, 3))
        vec.step(acts[0])  # warm-up

        def step(i: int) -> int:
            res = vec.step(acts[i % 512])
            done = np.flatnonzero(vec.finished)
            if done.size:
                vec.reset_envs(done)
            return int(res.active.sum())

        return _measure(seconds, step)
    finally:
        vec.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=3.0, help="time per figure (default 3)")
    p.add_argument("--n-envs", type=int, nargs="+", default=[8, 16], help="vector sizes (8 16)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (1 2)")
    p.add_argument("--repeat", type=int, default=2, help="best of this many runs (default 2)")
    args = p.parse_args(argv)
    sec = args.seconds

    def best(fn: Callable[[], Figure]) -> Figure:
        runs = [fn() for _ in range(args.repeat)]
        return Figure(max(r.rate for r in runs), min(r.parent_cpu_us for r in runs))

    load = os.getloadavg()[0]
    base = best(lambda: bare(sec))
    rows = [("bare mpe2 simple_spread (parallel_env)", base)]
    rows.append(("PettingZooTeamEnv adapter, 1 env", best(lambda: adapter(sec))))
    for n in args.n_envs:
        rows.append((f"SyncVectorEnv n_envs={n}", best(lambda n=n: vector("sync", n, 1, sec))))
        for w in args.workers:
            rows.append(
                (
                    f"SubprocVectorEnv n_envs={n} workers={w}",
                    best(lambda n=n, w=w: vector("subproc", n, w, sec)),
                )
            )
    print(f"load average before the run: {load:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'configuration':<42} {'steps/s':>8} {'vs bare':>8} {'parent CPU us/step':>19} {'vs bare':>8}"
    )
    for name, f in rows:
        print(
            f"{name:<42} {f.rate:>8,.0f} {f.rate / base.rate:>7.2f}x "
            f"{f.parent_cpu_us:>19.1f} {f.parent_cpu_us / base.parent_cpu_us:>7.2f}x"
        )
    print("(random actions, 3 agents; steps/s is wall time and depends on the machine's load)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
