"""The finite-input check's cost in training on simple_spread (mpe2 objects, EPyMARL's update ratio).

Learning runs at EPyMARL's update ratio (one update of ``batch_size`` = 32 episodes per episode
collected; ``updates_per_episode`` 1.0, the default). Measured in the same run:

- bare env: mpe2 simple_spread_v3 (through our adapter, as training uses it) stepped with random
  available actions in this one process (the issue's reference: ~4,900 steps/s on this machine);
- training: `Trainer` with the default config, after a warm-up that fills replay past one batch,
  timed between two metric records (so start-up, the final evaluation and checkpoint are excluded);
  updates/episode is printed to show the ratio held.

Prints both rates, their ratio, and the ratio to EPyMARL's 880 steps/s (measured on this machine by
the project's issue).

The finite-input check (every observation, state and reward is tested for NaN/inf before it reaches
replay; always on in training) is measured in the same run two ways: training throughput with the
check and with it replaced by a no-op (rounds alternate, best of each kept against the shared
machine's noise), and the check's own cost per vector step on arrays of this env's shapes, as a
share of the time training spends per vector step (goal: under 2 %). The machine is shared: run it when nothing else is busy, and read the
CPU-load line it prints.

    .venv/bin/python bench/train_speed.py [--steps 60000] [--n-envs 8] [--vector auto]
        [--check-rounds 2]   # 0 skips the finite-check measurement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import timeit
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# The same bare-env baseline and EPyMARL's figure as the training-speed bench (bench/ is on
# sys.path when a script of it runs).
from train_speed import EPYMARL_STEPS_PER_S, bare_env_rate

from qmix_edge.envs import make_env
from qmix_edge.train import collector as collector_module
from qmix_edge.train.finite import check_team_arrays
from qmix_edge.train.trainer import Trainer


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


@contextlib.contextmanager
def finite_check_off() -> Iterator[None]:
    """Replace the collector's finite-input check with a no-op (for this measurement only)."""
    saved = collector_module.check_team_arrays
    collector_module.check_team_arrays = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        collector_module.check_team_arrays = saved


def check_seconds_per_call(n_envs: int) -> float:
    """The check's time per vector step (training: one call per step) on simple_spread's shapes."""
    spec = make_env("simple_spread").spec
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n_envs, spec.n_agents, spec.max_obs_dim)).astype(np.float32)
    state = rng.standard_normal((n_envs, spec.state_dim)).astype(np.float32)
    reward = rng.standard_normal(n_envs).astype(np.float32)
    agent_rewards = rng.standard_normal((n_envs, spec.n_agents)).astype(np.float32)
    steps, seeds = np.ones(n_envs, np.int64), np.zeros(n_envs, np.int64)

    def call() -> None:
        check_team_arrays(
            spec.env_id,
            spec.agent_ids,
            obs=obs,
            state=state,
            reward=reward,
            agent_rewards=agent_rewards,
            steps=steps,
            seeds=seeds,
        )

    number = 20_000
    return min(timeit.repeat(call, number=number, repeat=5)) / number


def finite_check_cost(steps: int, warmup: int, config: dict, rounds: int) -> None:
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        for rates, check in ((on, True), (off, False)):
            with tempfile.TemporaryDirectory() as tmp:
                guard = contextlib.nullcontext() if check else finite_check_off()
                with guard:
                    trainer_rate = training_rate(steps, warmup, config, Path(tmp) / "run")
                rates.append(trainer_rate["rate"])
    n_envs = int(config.get("n_envs", 0)) or _default_n_envs()
    per_call = check_seconds_per_call(n_envs)
    best_on, best_off = max(on), max(off)
    step_seconds = n_envs / best_on  # wall seconds per vector step with the check on
    print(
        f"finite-input check, training rate with / without (best of {rounds}): "
        f"{best_on:8.0f} / {best_off:8.0f} env steps/s, ratio {best_on / best_off:.3f} "
        f"(all rounds: with {[round(r) for r in on]}, without {[round(r) for r in off]})"
    )
    print(
        f"finite-input check, own cost: {per_call * 1e6:.1f} us per vector step of {n_envs} envs "
        f"= {100 * per_call / step_seconds:.2f} % of a training vector step (goal < 2 %)"
    )


def _default_n_envs() -> int:
    from qmix_edge.train import TrainConfig

    return TrainConfig().n_envs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60_000, help="timed env steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5_000, help="untimed env steps first")
    parser.add_argument("--bare-seconds", type=float, default=5.0)
    parser.add_argument("--n-envs", type=int, default=None, help="default: the config's")
    parser.add_argument("--vector", default=None, choices=["auto", "sync", "subprocess"])
    parser.add_argument(
        "--check-rounds",
        type=int,
        default=2,
        help="rounds of training with and without the finite-input check (0: skip)",
    )
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
    if args.check_rounds > 0:
        finite_check_cost(args.steps, args.warmup, config, args.check_rounds)
        load_after = os.getloadavg()[0]
    print(f"1-min load average before/after: {load_before:.2f} / {load_after:.2f} (2 cores)")


if __name__ == "__main__":
    main()
