"""Training speed on simple_spread: env steps/s *with learning*, beside the bare env rates.

Measured in the same run, one after the other (so under the same background load):

- bare per-object env: mpe2 simple_spread_v3 through our adapter, random actions, one process;
- bare batched engine: `BatchedSimpleSpread` with the config's ``n_envs`` worlds, random actions;
- training on the batched engine (``vector`` batched) with the preset's config (default: the
  ``fast`` preset, JaxMARL's update ratio of one 32-episode update per 208 env steps); goal >= 25,000
  env steps/s with 3 agents;
- training on the per-object path (``vector`` subprocess: mpe2's own env objects in a worker
  process) with the same config, the old way, for the ratio.

Training rates are timed between two metric records after a warm-up that passes
``learning_starts``, so start-up, the final evaluation and checkpoint are excluded; updates/s and
env steps per update are printed to show the ratio held. The machine is shared: the 1-minute load
average is printed beside the figures.

    .venv/bin/python bench/train_speed.py [--preset fast|none] [--steps 300000] [--n-envs 32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from qmix_edge.envs import BatchedSimpleSpread, make_env
from qmix_edge.train.config import preset_values
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


def bare_batched_rate(seconds: float, n_envs: int) -> float:
    venv = BatchedSimpleSpread(n_envs)
    rng = np.random.default_rng(0)
    steps, wave = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.reset_all([wave * n_envs + i for i in range(n_envs)])
        wave += 1
        for _ in range(venv.spec.episode_limit):
            venv.step(rng.integers(0, 5, (n_envs, 3)))
            steps += n_envs
    return steps / (time.perf_counter() - t0)


def training_rate(steps: int, warmup: int, config: dict, run_dir: Path) -> dict[str, float]:
    log_interval = max(steps // 8, 1_000)  # several records inside the timed span
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
        "steps_per_update": (last["step"] - first["step"]) / max(updates, 1),
        "vector": trainer.vector_kind,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=300_000, help="timed env steps (after warm-up)"
    )
    parser.add_argument("--warmup", type=int, default=40_000, help="untimed env steps first")
    parser.add_argument("--bare-seconds", type=float, default=5.0)
    parser.add_argument("--preset", default="fast", help="a TrainConfig preset, or 'none'")
    parser.add_argument("--n-envs", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--old-steps", type=int, default=60_000, help="timed env steps of the per-object run"
    )
    args = parser.parse_args()
    config: dict = {} if args.preset == "none" else preset_values(args.preset)
    if args.n_envs is not None:
        config["n_envs"] = args.n_envs
    n_envs = int(config.get("n_envs", 16))

    loads = [os.getloadavg()[0]]
    bare = bare_env_rate(args.bare_seconds)
    batched = bare_batched_rate(args.bare_seconds, n_envs)
    loads.append(os.getloadavg()[0])
    with tempfile.TemporaryDirectory() as tmp:
        fast = training_rate(
            args.steps, args.warmup, {**config, "vector": "batched"}, Path(tmp) / "a"
        )
        loads.append(os.getloadavg()[0])
        old_cfg = {**config, "vector": "subprocess"}
        old = training_rate(args.old_steps, args.warmup, old_cfg, Path(tmp) / "b")
        loads.append(os.getloadavg()[0])
    print(f"config: preset {args.preset}, n_envs {n_envs}")
    print(f"bare per-object env (mpe2, 1 process):   {bare:9.0f} env steps/s")
    print(f"bare batched engine ({n_envs} worlds):        {batched:9.0f} env steps/s")
    for name, r in (("batched engine", fast), ("per-object (subprocess)", old)):
        print(
            f"training with learning, {name:24s} {r['rate']:9.0f} env steps/s "
            f"({r['updates_per_s']:.0f} updates/s, {r['steps_per_update']:.0f} env steps/update)"
        )
    print(f"ratio batched / per-object training:     {fast['rate'] / old['rate']:9.2f}")
    print(f"ratio batched training / bare batched:   {fast['rate'] / batched:9.2f}")
    print(
        f"goal >= 25,000 env steps/s with learning: {'met' if fast['rate'] >= 25_000 else 'NOT met'}"
    )
    print(
        f"ratio batched training / EPyMARL ({EPYMARL_STEPS_PER_S:.0f} steps/s): "
        f"{fast['rate'] / EPYMARL_STEPS_PER_S:8.1f}"
    )
    print(
        "1-min load average at start / after bare / after batched / after per-object (2 cores): "
        + " / ".join(f"{x:.2f}" for x in loads)
    )


if __name__ == "__main__":
    main()
