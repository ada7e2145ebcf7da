"""Training speed on simple_spread: env steps/s *with learning*, beside the bare env rate.

Learning runs at EPyMARL's update ratio (one update of ``batch_size`` = 32 episodes per episode
collected; ``updates_per_episode`` 1.0, the default). Measured in the same run:

- bare env: mpe2 simple_spread_v3 (through our adapter, as training uses it) stepped with random
  available actions in this one process (the issue's reference: ~4,900 steps/s on this machine);
- training: `Trainer` with the default config, after a warm-up that fills replay past one batch,
  timed between two metric records (so start-up, the final evaluation and checkpoint are excluded);
  updates/episode is printed to show the ratio held.

Prints both rates, their ratio, and the ratio to EPyMARL's 880 steps/s (measured on this machine by
the project's issue). The machine is shared: run it when nothing else is busy, and read the
CPU-load line it prints.

    .venv/bin/python bench/train_speed.py [--steps 60000] [--n-envs 8] [--vector auto]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from qmix_edge.envs import make_env
from qmix_edge.train.trainer import Trainer

EPYMARL_STEPS_PER_S = 880.0


def bare_env_rate(seconds: float) -> float:
    env = make_env("simple_spread")
    rng = np.random.default_rng(0)
    view = env.reset(seed=0)
    steps, episode = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        scores = np.where(view.avail, rng.random(view.avail.shape), -1.0)
        res = env.step(scores.argmax(-1))
        steps += 1
        if res.done:
            episode += 1
            view = env.reset(seed=episode)
        else:
            view = res.next
    return steps / (time.perf_counter() - t0)


def training_rate(steps: int, warmup: int, config: dict, run_dir: Path) -> dict[str, float]:
    log_interval = 5_000
    cfg = {
        **config,
        "log_interval": log_interval,
        "eval_interval": 10**9,
        "eval_episodes": 1,
        "checkpoint_interval": 0,
    }
    trainer = Trainer("qmix", env="simple_spread", seed=0, config=cfg, run_dir=run_dir)
    trainer.train(total_timesteps=warmup + steps)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "time/steps_per_s" in r and r["step"] >= warmup]
    first, last = timed[0], timed[-1]
    rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
    updates = last["train/updates"] - first["train/updates"]
    episodes = last["rollout/episodes"] - first["rollout/episodes"]
    return {
        "rate": rate,
        "updates_per_s": updates / (last["time"] - first["time"]),
        "updates_per_episode": updates / max(episodes, 1),
        "vector": trainer.vector_kind,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60_000, help="timed env steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5_000, help="untimed env steps first")
    parser.add_argument("--bare-seconds", type=float, default=5.0)
    parser.add_argument("--n-envs", type=int, default=None, help="default: the config's")
    parser.add_argument("--vector", default=None, choices=["auto", "sync", "subprocess"])
    args = parser.parse_args()
    config: dict = {}
    if args.n_envs is not None:
        config["n_envs"] = args.n_envs
    if args.vector is not None:
        config["vector"] = args.vector

    load_before = os.getloadavg()[0]
    bare = bare_env_rate(args.bare_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        train = training_rate(args.steps, args.warmup, config, Path(tmp) / "run")
    load_after = os.getloadavg()[0]
    print(f"bare env (random actions, 1 process):   {bare:8.0f} env steps/s")
    print(
        f"training with learning ({train['vector']}): {train['rate']:8.0f} env steps/s "
        f"({train['updates_per_s']:.0f} updates/s, {train['updates_per_episode']:.2f} updates/episode)"
    )
    print(f"ratio training / bare env:               {train['rate'] / bare:8.2f}")
    print(
        f"ratio training / EPyMARL ({EPYMARL_STEPS_PER_S:.0f} steps/s):    "
        f"{train['rate'] / EPYMARL_STEPS_PER_S:8.2f}   (goal >= 3.0, i.e. >= 2,600 steps/s)"
    )
    print(f"1-min load average before/after: {load_before:.2f} / {load_after:.2f} (2 cores)")


if __name__ == "__main__":
    main()
