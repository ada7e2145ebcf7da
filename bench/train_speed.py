"""Training speed on simple_spread: env steps/s *with learning*, beside what bounds it, in one run.

Measured one after the other (so under the same background load; the 1-minute load average is
printed beside every figure, and the machine is shared):

- bare batched engine: `BatchedSimpleSpread` with the config's ``n_envs`` worlds, random actions,
  resets included: the engine alone;
- collection alone: the same worlds stepped by the trainer's `Collector` (one batched forward of
  the agent network per vector step, epsilon-greedy, episodes written out), no learning: what the
  collector process can give on one core;
- learner alone: updates of ``batch_size`` episodes on a full replay buffer, one thread: times
  ``env_steps_per_update`` it is the env-step rate the learner can keep up with on one core;
- training with learning, the preset's config (default ``fast``: JaxMARL's update ratio of one
  32-episode update per 208 env steps, the collector in its own process overlapping the learner):
  the goal is >= 25,000 env steps/s with 3 agents;
- the same config with ``overlap`` off (collection and updates alternate in one process), for the
  ratio;
- with ``--per-object``, also the same config on mpe2's own env objects in a worker process.

Training rates are timed between two metric records after a warm-up that passes
``learning_starts``, so start-up, the final evaluation and checkpoint are excluded; updates/s and
env steps per update are printed to show the ratio held.

    .venv/bin/python bench/train_speed.py [--preset fast|none] [--steps 600000] [--n-envs 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qmix_edge.envs import BatchedSimpleSpread
from qmix_edge.train.collector import Collector
from qmix_edge.train.collector_process import EpisodeQueue
from qmix_edge.train.config import TrainConfig, preset_values
from qmix_edge.train.learner import Learner
from qmix_edge.train.registry import build_models
from qmix_edge.train.replay import EpisodeReplay, empty_episodes
from qmix_edge.train.trainer import Trainer

GOAL = 25_000.0


def load() -> float:
    return os.getloadavg()[0]


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


def collection_rate(seconds: float, cfg: TrainConfig) -> float:
    venv = BatchedSimpleSpread(cfg.n_envs)
    net = build_models(cfg, venv.spec)[0].requires_grad_(False)
    rngs = np.random.default_rng(0), np.random.default_rng(1)
    collector = Collector(venv, net, venv.spec.episode_limit, *rngs)
    collector.start()
    queue = EpisodeQueue()
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        actions = collector.act(cfg.epsilon_end)
        collector.record(venv.step(actions), queue)
        queue.drain(collector.pending)
        steps += cfg.n_envs
    return steps / (time.perf_counter() - t0)


def learner_rate(seconds: float, cfg: TrainConfig) -> float:
    """Updates/s of the learner alone on a replay full of random episodes."""
    spec = BatchedSimpleSpread(1).spec
    rng = np.random.default_rng(0)
    limit = spec.episode_limit
    n = cfg.buffer_episodes(limit)
    shape = (spec.n_agents, spec.max_obs_dim, spec.state_dim, spec.max_n_actions)
    replay = EpisodeReplay(n, limit, *shape, np.random.default_rng(1))
    episodes = empty_episodes(n, limit, *shape)
    episodes.obs[:] = rng.standard_normal(episodes.obs.shape)
    episodes.state[:] = rng.standard_normal(episodes.state.shape)
    episodes.avail[:] = episodes.alive[:] = episodes.filled[:] = True
    episodes.actions[:] = rng.integers(0, spec.max_n_actions, episodes.actions.shape)
    episodes.reward[:] = rng.standard_normal(episodes.reward.shape)
    replay.add(episodes, np.arange(n))
    learner = Learner(cfg, *build_models(cfg, spec))
    for _ in range(10):
        learner.update(replay.sample(cfg.batch_size))
    updates = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        learner.update(replay.sample(cfg.batch_size))
        updates += 1
    return updates / (time.perf_counter() - t0)


def training_rate(steps: int, warmup: int, config: dict[str, Any], run_dir: Path) -> dict:
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
    seconds = last["time"] - first["time"]
    updates = last["train/updates"] - first["train/updates"]
    return {
        "rate": (last["step"] - first["step"]) / seconds,
        "updates_per_s": updates / seconds,
        "steps_per_update": (last["step"] - first["step"]) / max(updates, 1),
        "vector": trainer.vector_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600_000, help="timed env steps")
    parser.add_argument("--warmup", type=int, default=40_000, help="untimed env steps first")
    parser.add_argument("--seconds", type=float, default=5.0, help="per bare measurement")
    parser.add_argument("--preset", default="fast", help="a TrainConfig preset, or 'none'")
    parser.add_argument("--n-envs", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--per-object", action="store_true", help="also train on mpe2's own env objects"
    )
    parser.add_argument(
        "--old-steps", type=int, default=60_000, help="timed env steps of the per-object run"
    )
    args = parser.parse_args()
    config: dict[str, Any] = {} if args.preset == "none" else preset_values(args.preset)
    if args.n_envs is not None:
        config["n_envs"] = args.n_envs
    cfg = TrainConfig.from_dict(config)
    torch.set_num_threads(cfg.torch_threads or torch.get_num_threads())
    print(
        f"config: preset {args.preset}, n_envs {cfg.n_envs}, overlap {cfg.overlap}, "
        f"{cfg.env_steps_per_update} env steps per update of {cfg.batch_size} episodes; "
        f"{os.cpu_count()} cores"
    )
    rows: list[tuple[str, float, str, float]] = []

    def row(name: str, rate: float, note: str = "") -> float:
        rows.append((name, rate, note, load()))
        print(f"{name:46s} {rate:9.0f} env steps/s {note}  (load {load():.2f})", flush=True)
        return rate

    start_load = load()
    bare = row(
        f"bare batched engine ({cfg.n_envs} worlds)", bare_batched_rate(args.seconds, cfg.n_envs)
    )
    row("collection alone (policy + engine, no learning)", collection_rate(args.seconds, cfg))
    ups = learner_rate(args.seconds, cfg)
    per_update = cfg.env_steps_per_update or cfg.n_envs  # the ceiling the learner allows
    row(
        "learner alone, as env steps it keeps up with",
        ups * per_update,
        f"({ups:.1f} updates/s, {1e3 / ups:.2f} ms each)",
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"with": config, "without": {**config, "overlap": False}}
        results = {}
        for name, values in runs.items():
            r = training_rate(
                args.steps, args.warmup, {**values, "vector": "batched"}, Path(tmp) / name
            )
            results[name] = r
            row(
                f"training with learning, overlap {'on' if values.get('overlap') else 'off'}",
                r["rate"],
                f"({r['updates_per_s']:.1f} updates/s, {r['steps_per_update']:.0f} env steps/update)",
            )
        if args.per_object:
            old_cfg = {**config, "vector": "subprocess", "overlap": False}
            r = training_rate(args.old_steps, args.warmup, old_cfg, Path(tmp) / "old")
            row("training with learning, mpe2 objects (subprocess)", r["rate"])
    fast = results["with"]["rate"]
    print(f"ratio training / bare engine:            {fast / bare:6.2f}")
    print(f"ratio overlap on / off:                  {fast / results['without']['rate']:6.2f}")
    print(
        f"goal >= {GOAL:,.0f} env steps/s with learning: {'met' if fast >= GOAL else 'NOT met'} "
        f"({fast:,.0f})"
    )
    print(f"1-min load average at start {start_load:.2f}, at end {load():.2f} (2 cores, shared)")


if __name__ == "__main__":
    main()
