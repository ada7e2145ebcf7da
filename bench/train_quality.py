"""Time to quality on simple_spread: greedy team return against wall seconds (and env steps).

Trains QMIX with the default config (or ``--set key=value`` overrides) for ``--steps`` env steps,
evaluating greedily every ``--eval-interval`` env steps on 32 fixed-seed episodes (all 25 steps'
rewards counted, summed over agents). Wall seconds include evaluation, checkpoints and start-up.
Prints the curve, the first time the greedy return reached ``--target`` (-48.8: EPyMARL's return
after 1M steps and 1,123 s on this machine), and whether that was within ``--budget`` seconds (375 s:
a third of EPyMARL's time). Baselines measured in the same run: the random policy's return on the
same evaluation seeds, and the bare env rate.

Takes several minutes: run it in the background, e.g.

    nohup .venv/bin/python bench/train_quality.py --run-dir runs/quality > quality.txt 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from qmix_edge.envs import make_env
from qmix_edge.envs.baselines import random_team_return
from qmix_edge.train.trainer import Trainer

EPYMARL_SECONDS_TO_TARGET = 1123.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--eval-interval", type=int, default=20_000)
    parser.add_argument("--target", type=float, default=-48.8)
    parser.add_argument("--budget", type=float, default=375.0, help="wall seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (YAML value)",
    )
    args = parser.parse_args()
    config: dict[str, Any] = {"eval_interval": args.eval_interval, "checkpoint_interval": 200_000}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = yaml.safe_load(value)

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    trainer = Trainer(
        "qmix", env="simple_spread", seed=args.seed, config=config, run_dir=args.run_dir
    )
    result = trainer.train(total_timesteps=args.steps)
    total_s = time.perf_counter() - t0
    curve = [
        (rec["step"], rec["time"], rec["eval/return_mean"])
        for rec in map(json.loads, (trainer.run_dir / "metrics.jsonl").read_text().splitlines())
        if rec.get("eval/return_mean") is not None
    ]
    random_return = random_team_return(make_env("simple_spread"), trainer.eval_seeds)
    print(f"config: {json.dumps(trainer.config.to_dict())}")
    print(f"random policy greedy-eval return (same 32 seeds, 25 steps): {random_return:.1f}")
    print(" env steps   wall s   greedy return")
    for step, secs, ret in curve:
        print(f"{step:10d} {secs:8.1f} {ret:10.2f}")
    reached = next(((s, t, r) for s, t, r in curve if r >= args.target), None)
    within = [r for _, t, r in curve if t <= args.budget]
    best_within = max(within) if within else float("nan")
    print(
        f"final: {result['mean_reward']:.2f} +- {result['std_reward']:.2f} after {result['env_steps']} steps"
    )
    print(f"mean speed {result['steps_per_s']:.0f} env steps/s; whole run {total_s:.0f} s")
    print(f"best greedy return within {args.budget:.0f} s: {best_within:.2f}")
    if reached is None:
        print(f"target {args.target} NOT reached within this run")
    else:
        s, t, r = reached
        verdict = "WITHIN" if t <= args.budget else "NOT within"
        print(
            f"target {args.target} first reached at {t:.0f} s, {s} env steps (return {r:.2f}): "
            f"{verdict} the {args.budget:.0f} s budget; EPyMARL needs {EPYMARL_SECONDS_TO_TARGET:.0f} s "
            f"(ratio {EPYMARL_SECONDS_TO_TARGET / t:.2f}x)"
        )
    print(
        f"1-min load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} (2 cores)"
    )
    print(f"curve: {trainer.run_dir / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
