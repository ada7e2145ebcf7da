"""qmix-edge beside JaxMARL's QMIX on simple_spread, run alternately so both see the same load.

For each seed, runs qmix-edge (``bench/train_quality.py``'s training: the ``fast`` preset, greedy
evaluation on mpe2) and then JaxMARL's ``baselines/QLearning/qmix_rnn.py`` with ``+alg=ql_rnn_mpe``
(its defaults) through a runner command you give (``--jaxmarl CMD``, called as ``CMD SEED SECONDS
LOG``; it must append JaxMARL's test metrics to LOG as JSON lines with ``env_step``, ``grad_steps``,
``test_returned_episode_returns`` and ``wall_s``, e.g. through a stub of wandb). JaxMARL is not a
dependency of qmix-edge: it runs in its own environment. Order: ours, theirs, ours, theirs...

Prints, per run: env steps/s and gradient steps/s over the run, the greedy return reached by 60,
120, 180 and 250 s, and the first time each of -48.8 (EPyMARL's 1M-step return), -40 and -30 was
reached; with the 1-minute load average before and after each run.

Scales: both returns are summed over the agents; qmix-edge's cover mpe2's 25 steps, JaxMARL's
test episodes 26 (its env ends one step later), so JaxMARL's figure includes one more step's
(negative) reward. Wall seconds: qmix-edge's count from the Trainer's creation (imports not
included), JaxMARL's from its metrics logger's import (compilation included).

    .venv/bin/python bench/train_vs_jaxmarl.py --jaxmarl /path/to/run_jm.sh --seeds 0 1 \\
        --seconds 250 --out jm_runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MARKS = (60.0, 120.0, 180.0, 250.0)
TARGETS = (-48.8, -40.0, -30.0)


def summarize(name: str, points: list[tuple[float, float, float, float]], load: str) -> str:
    """points: (wall s, env steps, grad steps, greedy return), in time order."""
    if not points:
        return f"| {name} | no evaluation logged | | | | | | | | {load} |"
    wall, steps, grads, _ = points[-1]
    first = points[0][0]
    span = max(wall - first, 1e-9)
    rate = (steps - points[0][1]) / span
    grad_rate = (grads - points[0][2]) / span
    cells = []
    for mark in MARKS:
        seen = [r for t, _, _, r in points if t <= mark]
        cells.append(f"{seen[-1]:.1f}" if seen else "-")
    for target in TARGETS:
        hit = next(((t, s) for t, s, _, r in points if r >= target), None)
        cells.append("not reached" if hit is None else f"{hit[0]:.0f} s ({hit[1] / 1e6:.2f}M)")
    best = max(r for *_, r in points)
    return (
        f"| {name} | {rate:,.0f} | {grad_rate:.0f} | "
        + " | ".join(cells)
        + f" | {best:.1f} | {load} |"
    )


def ours(seed: int, seconds: float, out: Path) -> list[tuple[float, float, float, float]]:
    run_dir = out / f"ours-s{seed}"
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("train_quality.py")),
        "--seeds",
        str(seed),
        "--seconds",
        str(seconds),
        "--run-dir",
        str(run_dir),
    ]
    with (out / f"ours-s{seed}.txt").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    records = [
        json.loads(line)
        for line in (run_dir / f"s{seed}" / "metrics.jsonl").read_text().splitlines()
    ]
    startup = _startup(out / f"ours-s{seed}.txt")
    points, updates = [], 0.0
    for r in records:
        updates = r.get("train/updates", updates)
        if r.get("eval/return_mean") is not None:
            points.append((r["time"] + startup, r["step"], updates, r["eval/return_mean"]))
    return points


def _startup(log: Path) -> float:
    for line in log.read_text().splitlines():
        if line.startswith("start-up"):
            return float(line.split()[1])
    return 0.0


def theirs(
    cmd: str, seed: int, seconds: float, out: Path
) -> list[tuple[float, float, float, float]]:
    log = out / f"jaxmarl-s{seed}.jsonl"
    log.unlink(missing_ok=True)
    subprocess.run([cmd, str(seed), str(int(seconds)), str(log.resolve())], check=False)
    if not log.exists():
        return []
    points = []
    for line in log.read_text().splitlines():
        r = json.loads(line)
        points.append(
            (r["wall_s"], r["env_step"], r["grad_steps"], r["test_returned_episode_returns"])
        )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jaxmarl", required=True, help="runner: CMD SEED SECONDS LOG")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seconds", type=float, default=250.0)
    parser.add_argument("--out", type=Path, default=Path("jaxmarl-side-by-side"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for name, run in (
            (f"qmix-edge (fast) seed {seed}", lambda s=seed: ours(s, args.seconds, args.out)),
            (
                f"JaxMARL qmix_rnn defaults seed {seed}",
                lambda s=seed: theirs(args.jaxmarl, s, args.seconds, args.out),
            ),
        ):
            before = os.getloadavg()[0]
            started = time.strftime("%H:%M")
            points = run()
            load = f"{started}, {before:.2f} -> {os.getloadavg()[0]:.2f}"
            rows.append(summarize(name, points, load))
            print(rows[-1], flush=True)
    marks = " | ".join(f"@{m:.0f} s" for m in MARKS)
    targets = " | ".join(f"first at {t:g}" for t in TARGETS)
    print(f"\n| run | env steps/s | grad steps/s | {marks} | {targets} | best | start, load |")
    print("|---" * (5 + len(MARKS) + len(TARGETS)) + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
