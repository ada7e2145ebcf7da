"""VMAS scenarios' bare speed: VMAS's own batched step vs the same worlds behind `VmasVectorEnv`.

For each scenario and number of worlds, prints world steps per second (worlds x vector steps / wall
seconds; random discrete actions, episodes of ``--max-steps`` steps, finished worlds reset as the
trainer's collector resets them) and the CPU microseconds per world step, for VMAS's own
``Environment.step`` (the baseline, measured in the same run, made with the same scenario options
and team size) and for ``vmas:<scenario>`` through
our adapter (arrays in and out, per-world episode bookkeeping, the env's own random streams),
with the ratio of the two. The two are measured alternately, best of ``--repeat`` runs each.

    .venv/bin/python bench/vmas_speed.py [--scenarios balance transport navigation]
        [--n-envs 1 64 256 1024] [--seconds 3] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np


class Figure(NamedTuple):
    rate: float
    """world steps per wall second"""
    cpu_us: float
    """CPU microseconds of this process per world step"""


def _measure(seconds: float, step: Callable[[int], int]) -> Figure:
    """Call ``step(i)`` (returns world steps done) until ``seconds`` of wall time have passed."""
    step(0)  # warm-up
    steps, i = 0, 1
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        steps += step(i)
        i += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Figure(steps / wall, cpu / steps * 1e6)


def scenario_kwargs(scenario: str, max_steps: int) -> dict[str, Any]:
    """The scenario's keyword arguments as the adapter makes it (its team size, e.g. n_agents=3)."""
    from qmix_edge.envs import make_env

    spec = make_env(f"vmas:{scenario}", env_kwargs={"max_steps": max_steps}).spec
    return {k: v for k, v in spec.env_kwargs.items() if k != "max_steps"}


def bare(scenario: str, n_envs: int, max_steps: int, seconds: float) -> Figure:
    import torch
    import vmas

    env = vmas.make_env(
        scenario,
        num_envs=n_envs,
        continuous_actions=False,
        terminated_truncated=True,
        max_steps=max_steps,
        seed=0,
        **scenario_kwargs(scenario, max_steps),
    )
    gen = torch.Generator().manual_seed(0)
    acts = [
        torch.randint(0, int(space.n), (64, n_envs), generator=gen) for space in env.action_space
    ]

    def step(i: int) -> int:
        _, _, term, trunc, _ = env.step([a[i % 64] for a in acts])
        done = term | trunc
        if bool(done.all()):
            env.reset()
        else:
            for k in torch.nonzero(done).flatten().tolist():
                env.reset_at(k)
        return n_envs

    return _measure(seconds, step)


def ours(scenario: str, n_envs: int, max_steps: int, seconds: float) -> Figure:
    from qmix_edge.envs import make_vector_env

    venv = make_vector_env(
        f"vmas:{scenario}", n_envs, backend="batched", env_kwargs={"max_steps": max_steps}
    )
    rng = np.random.default_rng(0)
    n_actions = np.array([a.n_actions for a in venv.spec.agents])
    acts = (rng.random((64, n_envs, venv.spec.n_agents)) * n_actions).astype(np.int64)
    seeds = iter(range(10**9))
    venv.reset_all([next(seeds) for _ in range(n_envs)])

    def step(i: int) -> int:
        res = venv.step(acts[i % 64])
        done = np.flatnonzero(venv.finished)
        if done.size:
            venv.reset_envs(done, [next(seeds) for _ in range(done.size)])
        return int(res.active.sum())

    return _measure(seconds, step)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenarios", nargs="+", default=["balance", "transport", "navigation"])
    p.add_argument("--n-envs", type=int, nargs="+", default=[1, 64, 256, 1024])
    p.add_argument("--max-steps", type=int, default=100, help="episode length (default 100)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per figure (default 3)")
    p.add_argument(
        "--repeat", type=int, default=3, help="best of this many alternated runs (default 3)"
    )
    p.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)"
    )
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)

    def best(runs: list[Figure]) -> Figure:
        return Figure(max(r.rate for r in runs), min(r.cpu_us for r in runs))

    load = os.getloadavg()
    print(
        f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
        f"{os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}"
    )
    head = f"{'scenario':<12} {'worlds':>6} {'VMAS world steps/s':>19} {'ours':>10} {'ratio':>6}"
    print(head + f" {'VMAS CPU us':>12} {'ours':>8}")
    for scenario in args.scenarios:
        for n in args.n_envs:
            pairs = [  # alternated, so both see the same background load
                (
                    bare(scenario, n, args.max_steps, args.seconds),
                    ours(scenario, n, args.max_steps, args.seconds),
                )
                for _ in range(args.repeat)
            ]
            base, mine = best([p[0] for p in pairs]), best([p[1] for p in pairs])
            print(
                f"{scenario:<12} {n:>6} {base.rate:>19,.0f} {mine.rate:>10,.0f} "
                f"{mine.rate / base.rate:>5.2f}x {base.cpu_us:>12.1f} {mine.cpu_us:>8.1f}"
            )
    load = os.getloadavg()
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"(random discrete actions, episodes of {args.max_steps} steps; wall-time figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
