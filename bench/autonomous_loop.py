"""The field agent's own control loop at 50 Hz: overruns, decision time and memory, per process.

Each agent process loads its graph from a device artifact store (installed through the store's
verification, as a rollout would), then runs `AutonomousLoop` at --rate-hz for --seconds with a
synthetic sensor (a fresh random observation stamped at reading time, no mask) and a null
actuator, exactly the loop `qmix-agent` runs in the field. Measured in this run:
- the baseline: the same policy's ``act()`` called back to back in one process (p50, p99);
- N agent processes deciding at once, N = the number of cores and N = --agents (the team; more
  deciding processes than cores queue on the CPU, so both are printed): per process the ticks,
  overruns (a tick longer than its period) as a share of ticks, skipped ticks, decision time
  p50/p99 and its ratio to the baseline's p99, the lateness of tick starts (p99), and the peak
  resident memory (VmHWM) of the process with its loop and store.

Goals (field execution): at 50 Hz with 3 agents on 2 cores, overruns under 1% and decision p99
under 5 ms; each agent process under 80 MiB peak.

    .venv/bin/python bench/autonomous_loop.py [--seconds 20] [--rate-hz 50] [--agents 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OBS_DIM, N_ACTIONS, HIDDEN = 18, 5, 64


def export_team(out: Path, n_agents: int) -> None:
    import torch

    from qmix_edge.envs import AgentSpec, EnvSpec
    from qmix_edge.export import export_agent_networks
    from qmix_edge.train.networks import AgentNetwork

    torch.manual_seed(0)
    spec = EnvSpec(
        env_id="bench_field",
        agents=tuple(AgentSpec(f"agent_{i}", OBS_DIM, N_ACTIONS) for i in range(n_agents)),
        state_dim=OBS_DIM * n_agents,
        episode_limit=25,
    )
    net = AgentNetwork(spec, "gru", hidden_dim=HIDDEN, share_params=True, use_prev_action=True)
    export_agent_networks(net, spec, out)


def worker(artifacts: str, agent: str, seconds: float, rate_hz: float, store_dir: str) -> None:
    """One agent process: store -> policy -> loop; prints one JSON line."""
    from qmix_edge.runtime.agent.autonomous import AutonomousLoop, LoopSettings
    from qmix_edge.runtime.agent.store import ArtifactStore
    from qmix_edge.runtime.field import SensorReading
    from qmix_edge.runtime.policy import AgentPolicy

    store = ArtifactStore(store_dir)
    store.activate(store.add_local(artifacts))
    policy = AgentPolicy.load(store.path(), agent)
    rng = np.random.default_rng(int(agent.rpartition("_")[2]))
    starts: list[float] = []

    def sensor(ctx: object) -> SensorReading:
        now = time.monotonic()
        starts.append(now)
        return SensorReading(obs=rng.standard_normal(OBS_DIM).astype(np.float32), time=now)

    lateness: list[float] = []

    def on_tick(tick: object) -> None:
        lateness.append(starts[-1] - tick.t if starts else 0.0)  # type: ignore[attr-defined]

    loop = AutonomousLoop(
        policy,
        sensor,
        lambda ctx, a: None,
        LoopSettings(rate_hz=rate_hz, autostart=True, episode_limit=25),
        on_tick=on_tick,
    )
    loop.run(max_ticks=int(seconds * rate_hz))
    snap = loop.stats.snapshot()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    snap["late_ms_p99"] = float(np.percentile(np.asarray(lateness) * 1e3, 99))
    snap["peak_mib"] = hwm / 1024
    print(json.dumps(snap))


def baseline(artifacts: Path, calls: int = 5000) -> tuple[float, float]:
    from qmix_edge.runtime.policy import AgentPolicy

    p = AgentPolicy.load(artifacts, "agent_0")
    obs = np.random.default_rng(0).standard_normal((calls, OBS_DIM)).astype(np.float32)
    for o in obs[:500]:
        p.act(o)
    us = []
    for o in obs:
        t = time.perf_counter()
        p.act(o)
        us.append((time.perf_counter() - t) * 1e6)
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def team(artifacts: Path, n: int, seconds: float, rate: float, tmp: Path) -> list[dict[str, float]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(artifacts),
                f"agent_{i}",
                str(seconds),
                str(rate),
                str(tmp / f"store{n}_{i}"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"an agent process failed with exit {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="loop time per process")
    ap.add_argument("--rate-hz", type=float, default=50.0, help="control rate")
    ap.add_argument("--agents", type=int, default=3, help="the team size")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        a, agent, seconds, rate, store = args.worker
        worker(a, agent, float(seconds), float(rate), store)
        return
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        export_team(tmp / "art", args.agents)
        b50, b99 = baseline(tmp / "art")
        print(f"load average at start: {os.getloadavg()[0]:.2f} ({cores} cores)")
        print(f"baseline act() back to back, one process: p50 {b50:.0f} us, p99 {b99:.0f} us")
        print(
            f"{'processes':>9} {'agent':>7} {'ticks':>6} {'overrun %':>9} {'skipped':>7} "
            f"{'dec p50 us':>10} {'dec p99 us':>10} {'p99/base':>8} {'late p99 ms':>11} {'peak MiB':>8}"
        )
        for n in sorted({min(cores, args.agents), args.agents}):
            for i, s in enumerate(team(tmp / "art", n, args.seconds, args.rate_hz, tmp)):
                print(
                    f"{n:>9} {'agent_' + str(i):>7} {s['ticks']:>6} "
                    f"{100 * s['overruns'] / max(s['ticks'], 1):>9.2f} {s['skipped_ticks']:>7} "
                    f"{s['decision_us_p50']:>10.0f} {s['decision_us_p99']:>10.0f} "
                    f"{s['decision_us_p99'] / b99:>8.2f} {s['late_ms_p99']:>11.2f} {s['peak_mib']:>8.1f}"
                )
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
