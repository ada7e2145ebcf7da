"""Load and soak: N `qmix-agent` processes against one coordinator on loopback, for a duration.

Measures, in one run: team steps/s, team step exchange latency (p50/p99), fallbacks, late replies,
agent deaths/disconnects (errors), each process's peak memory (VmHWM) and its memory growth
(resident set after warm-up vs at the end). The baseline is the run itself: throughput and p99 of
the last tenth of the run are printed as ratios to the first tenth (drift: 1.0 = stable).

The coordinator runs in this process (simulation mode, a null environment: only the runtime is
loaded); the agents are real processes running exported ONNX GRU agents (random weights).

    .venv/bin/python bench/runtime_load.py [--agents 32] [--seconds 600] [--deadline-ms 1000]
        [--grpc-join]

Agents dial the step lane alone (qmix-eval's default; no gRPC in them), or with ``--grpc-join``
Join and Leave over gRPC and step on the lane.

Needs the [train] extra (torch) to export the bench artifact; the agents themselves do not use it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_step_latency import NullEnv, export_bench_artifact, memory_mib

from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig, TeamSpec
from qmix_edge.runtime.records import Step, read_records


def rss_mib(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return float("nan")


def pct(xs: list[int], q: float) -> float:
    s = sorted(xs)
    return float(s[int(q * (len(s) - 1))]) if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, default=32, help="agent processes (default 32)")
    ap.add_argument("--seconds", type=float, default=600.0, help="run length (default 600)")
    ap.add_argument("--deadline-ms", type=int, default=1000, help="step deadline (default 1000)")
    ap.add_argument("--warmup-s", type=float, default=10.0, help="memory baseline after this")
    ap.add_argument("--grpc-join", action="store_true", help="agents Join and Leave over gRPC")
    args = ap.parse_args(argv)
    n = args.agents
    with tempfile.TemporaryDirectory(prefix="qmix-load-") as d:
        work = Path(d)
        env = NullEnv(n, episode_limit=250)
        art = export_bench_artifact(env.spec, work / "art")
        team = TeamSpec.from_artifacts(art)
        record = work / "run.jsonl"
        coord = Coordinator(
            team,
            CoordinatorConfig(
                episodes=0,
                step_deadline_ms=args.deadline_ms,
                lease_steps=50,
                team_policy="continue_degraded",
                team_wait_s=300,
            ),
            env=env,
            record_path=record,
        )
        port = coord.start("127.0.0.1:0")
        dial = (
            ["--coordinator", f"127.0.0.1:{port}"]
            if args.grpc_join
            else ["--step-lane-address", f"127.0.0.1:{coord.lane_port}"]
        )
        procs = {
            a: subprocess.Popen(
                [
                    sys.executable, "-m", "qmix_edge.runtime.agent", "--artifacts", str(art),
                    "--agent", a, *dial, "--log-level", "WARNING",
                    "--give-up-s", "5",
                ],
                stderr=open(work / f"{a}.log", "w"),  # noqa: SIM115 - lives as long as the run
            )
            for a in team.agent_ids
        }  # fmt: skip
        me = psutil.Process()
        pids = {"coordinator": me.pid, **{a: p.pid for a, p in procs.items()}}
        start_rss: dict[str, float] = {}
        peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        died: dict[str, int] = {}
        box: list[object] = []
        runner = threading.Thread(target=lambda: box.append(coord.run()))
        t_start = time.monotonic()
        runner.start()
        while coord.team_steps == 0 and time.monotonic() - t_start < 300:
            time.sleep(0.1)  # the team assembles
        t0 = time.monotonic()
        print(
            f"{n} agents joined in {t0 - t_start:.1f} s; running {args.seconds:.0f} s", flush=True
        )
        next_report = t0 + 60
        while time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            for name, pid in pids.items():
                if name != "coordinator" and procs[name].poll() is not None:
                    died.setdefault(name, procs[name].returncode)
                    continue
                peak[name] = max(peak[name], memory_mib(pid, uss=False)["peak"])
                if not start_rss.get(name) and time.monotonic() - t0 >= args.warmup_s:
                    start_rss[name] = rss_mib(pid)
            if time.monotonic() >= next_report:
                print(f"  {time.monotonic() - t0:.0f} s: {coord.team_steps} team steps", flush=True)
                next_report += 60
        end_rss = {name: rss_mib(pid) for name, pid in pids.items() if name not in died}
        coord.request_stop()
        runner.join(60)
        coord.close()
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        steps = [r for r in read_records(record) if isinstance(r, Step)]
    span = (steps[-1].t_ms - steps[0].t_ms) / 1000.0
    ex = [r.exchange_us for r in steps]
    tenth = max(1, len(steps) // 10)
    first, last = steps[:tenth], steps[-tenth:]

    def rate(rs: list[Step]) -> float:
        dt = (rs[-1].t_ms - rs[0].t_ms) / 1000.0
        return (len(rs) - 1) / dt if dt > 0 else float("nan")

    c = coord.counters
    fallbacks = sum(len(r.fallback) for r in steps)
    late = sum(x.late_replies for x in c.values())
    errors = len(died) + sum(x.deaths + x.disconnects + x.invalid_actions for x in c.values())
    agents = [a for a in team.agent_ids if a in start_rss and a in end_rss]
    growth = [end_rss[a] - start_rss[a] for a in agents]
    agent_peaks = [peak[a] for a in team.agent_ids]
    print(f"agents {n}, run {span:.0f} s, team steps {len(steps)}")
    print(f"team steps/s {len(steps) / span:.1f}")
    print(
        f"exchange latency p50 {pct(ex, 0.5) / 1000:.2f} ms, p99 {pct(ex, 0.99) / 1000:.2f} ms, "
        f"max {max(ex) / 1000:.2f} ms"
    )
    print(f"fallbacks {fallbacks} (of {len(steps) * n} decisions), late replies {late}")
    print(f"errors {errors} (agent processes died: {died or 'none'})")
    print(
        f"agent peak memory (VmHWM): max {max(agent_peaks):.1f} MiB, mean "
        f"{statistics.mean(agent_peaks):.1f} MiB; coordinator+bench process {peak['coordinator']:.1f} MiB"
    )
    print(
        f"agent RSS growth after {args.warmup_s:.0f} s warm-up to end: max {max(growth):+.2f} MiB, "
        f"mean {statistics.mean(growth):+.2f} MiB; coordinator "
        f"{end_rss['coordinator'] - start_rss['coordinator']:+.2f} MiB"
    )
    p99_first = pct([int(r["exchange_us"]) for r in first], 0.99)
    p99_last = pct([int(r["exchange_us"]) for r in last], 0.99)
    print(
        f"drift (last tenth / first tenth): steps/s ratio {rate(last) / rate(first):.3f}, "
        f"p99 ratio {p99_last / p99_first:.3f}"
    )
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
