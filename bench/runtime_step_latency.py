"""Team step latency and throughput of the runtime on loopback, against the raw gRPC round trip.

Measured in one run, on this machine, for each way an agent reaches the coordinator: ``lane``
(agents dial the step lane alone, Join and Leave included, and load no gRPC; qmix-eval's
default), ``lane-grpc`` (Join and Leave over gRPC, steps on the lane) and ``stream`` (everything
on gRPC, the Steps stream; `--no-step-lane`):
1. the raw round trip of that carrier (one StepRequest-sized message each way, the other end in
   another process; bench/runtime_transport.py): the baseline;
2. a coordinator (in this process, simulation mode with a null environment so only the runtime is
   timed) and N real `qmix-agent` processes running exported ONNX agents (random weights), for
   N = 3 and N = 16: team step exchange latency (send all requests -> last reply), team steps/s,
   CPU per team step, and each agent process's peak resident memory (VmHWM, sampled with psutil).

For the lane it also measures the floor under a team step, so the ratio can be read: the raw
fan-out to 3 echo clients (the transport alone), the coordinator with 3 agents that decide
nothing (bench/lane_echo_agent.py: the coordinator and the transport), and each agent's
decision inside the team against the same `act()` called back to back in one process (on this
VM, code run once per step after a wait runs several times slower than warm code), and teams of
1 and 2 policy agents (no more deciding processes than cores: the ratio without queueing).

Each block prints the host's steal time while it ran (this is a VM): where it is more than a
few percent, that block's latencies and ratios measure the host, not the runtime.

Goals (issue 4): 3-agent step latency within 2x the raw round trip of the same transport;
>= 1,500 team steps/s with 3 agents; >= 200 with 16; < 80 MiB per agent process. Every figure and
ratio is printed, and the lane's figures beside the gRPC stream's.

    .venv/bin/python bench/runtime_step_latency.py [--steps 3000] [--steps16 1000]
        [--carriers lane,lane-grpc,stream] [--no-floor]

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

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_transport import run as raw_round_trip

from qmix_edge.envs import AgentSpec, EnvSpec, StepResult, TeamEnv, TeamStep
from qmix_edge.runtime.coordinator import Coordinator, CoordinatorConfig, TeamSpec
from qmix_edge.runtime.records import Step, read_records

OBS_DIM, N_ACTIONS = 18, 5  # simple_spread's sizes


class NullEnv(TeamEnv):
    """N agents, fixed pseudo-random observations, zero reward: costs nothing to step."""

    def __init__(self, n_agents: int, episode_limit: int) -> None:
        self.spec = EnvSpec(
            env_id="bench-null",
            agents=tuple(AgentSpec(f"agent_{i}", OBS_DIM, N_ACTIONS) for i in range(n_agents)),
            state_dim=OBS_DIM * n_agents,
            episode_limit=episode_limit,
        )
        rng = np.random.default_rng(0)
        n = n_agents
        self._ts = TeamStep(
            obs=rng.standard_normal((n, OBS_DIM)).astype(np.float32),  # (n_agents, obs_dim)
            avail=np.ones((n, N_ACTIONS), dtype=bool),  # (n_agents, n_actions)
            alive=np.ones(n, dtype=bool),
            state=np.zeros(OBS_DIM * n, dtype=np.float32),
        )
        self._t = 0

    def reset(self, seed: int | None = None) -> TeamStep:
        self._t = 0
        return self._ts

    def step(self, actions: np.ndarray) -> StepResult:
        self._t += 1
        done = self._t >= self.spec.episode_limit
        return StepResult(self._ts, 0.0, False, done, np.zeros(self.spec.n_agents, np.float32))


def export_bench_artifact(spec: EnvSpec, out: Path) -> Path:
    import torch

    from qmix_edge.export import export_agent_networks
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = AgentNetwork(spec, kind="gru", hidden_dim=64, use_prev_action=True)
    export_agent_networks(net, spec, out, run_id=f"bench-{spec.n_agents}", synthetic_episodes=2)
    return out


_NO_MEMORY: dict[str, float] = {"peak": 0.0, "anon": 0.0, "file": 0.0, "uss": 0.0}


def memory_mib(pid: int, *, uss: bool = True) -> dict[str, float]:
    """A live process's memory in MiB: ``peak`` (VmHWM, the goal's figure), and now ``anon``
    (RssAnon: its own heap and stacks), ``file`` (RssFile: resident pages of the files it maps,
    mostly shared libraries: clean, shared with other processes, and more or fewer for the same
    bytes depending on how those files were written into the page cache) and ``uss`` (memory no
    other process shares; 0 unless ``uss``: it walks the process's page tables)."""
    out = dict(_NO_MEMORY)
    keys = {"VmHWM:": "peak", "RssAnon:": "anon", "RssFile:": "file"}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in keys:
                    out[keys[parts[0]]] = int(parts[1]) / 1024.0
        if uss:
            out["uss"] = psutil.Process(pid).memory_full_info().uss / 2**20
    except (OSError, psutil.Error):
        pass
    return out


class Steal:
    """The share of this VM's CPU time its host took for others (``steal`` in /proc/stat) while
    a block ran: above a few percent, latency figures and ratios of that block are noise."""

    def __enter__(self) -> Steal:
        self._t0 = self._read()
        self.percent = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        (s0, a0), (s1, a1) = self._t0, self._read()
        self.percent = 100.0 * (s1 - s0) / (a1 - a0) if a1 > a0 else float("nan")

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return 0, 0
        return fields[7], sum(fields)


ECHO_AGENT = Path(__file__).resolve().parent / "lane_echo_agent.py"


def artifact_dir(workdir: Path, n_agents: int) -> Path:
    """Where `run_team` exports (once) the bench artifact of an ``n_agents`` team."""
    return workdir / f"art{n_agents}"


def run_team(
    n_agents: int, steps: int, workdir: Path, carrier: str = "lane", *, echo: bool = False
) -> dict[str, float]:
    """One team run; ``echo``: agents that decide nothing (bench/lane_echo_agent.py, lane only)."""
    if echo and carrier != "lane":
        raise ValueError(f"echo agents dial the step lane alone; found carrier {carrier!r}")
    episode_limit = 250
    episodes = max(2, steps // episode_limit)
    env = NullEnv(n_agents, episode_limit)
    art = artifact_dir(workdir, n_agents)
    if not (art / "manifest.json").exists():  # one artifact per team size, for every carrier
        export_bench_artifact(env.spec, art)
    team = TeamSpec.from_artifacts(art)
    record = workdir / f"records{n_agents}-{carrier}{'-echo' if echo else ''}.jsonl"
    coord = Coordinator(
        team,
        CoordinatorConfig(
            episodes=episodes,
            step_deadline_ms=1000,
            team_wait_s=300,
            step_lane=carrier != "stream",
        ),
        env=env,
        record_path=record,
    )
    port = coord.start("127.0.0.1:0")
    dial = (
        ["--step-lane-address", f"127.0.0.1:{coord.lane_port}"]
        if carrier == "lane"
        else ["--coordinator", f"127.0.0.1:{port}"]
    )

    def command(agent_id: str) -> list[str]:
        if echo:
            return [sys.executable, str(ECHO_AGENT), str(art), agent_id, dial[1]]
        return [
            sys.executable,
            "-m",
            "qmix_edge.runtime.agent",
            "--artifacts",
            str(art),
            "--agent",
            agent_id,
            *dial,
            "--log-level",
            "WARNING",
        ]

    procs = [subprocess.Popen(command(a)) for a in team.agent_ids]
    # Per agent: the sample that held the highest VmHWM seen (its breakdown), and the highest USS.
    peaks = {p.pid: dict(_NO_MEMORY) for p in procs}
    uss = {p.pid: 0.0 for p in procs}
    sampling = threading.Event()

    def sample() -> None:
        tick = 0
        while not sampling.wait(0.2):
            tick += 1
            for p in procs:
                if p.poll() is None:
                    m = memory_mib(p.pid, uss=tick % 5 == 0)  # USS once a second: not free
                    uss[p.pid] = max(uss[p.pid], m["uss"])
                    if m["peak"] >= peaks[p.pid]["peak"]:
                        peaks[p.pid] = m

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict[str, float] = {}
    try:
        summary_box: list[object] = []
        me = psutil.Process()
        cpu0 = me.cpu_times()
        runner = threading.Thread(target=lambda: summary_box.append(coord.run()))
        runner.start()
        # Each agent's CPU once the whole team is attached: what its start-up (imports, ONNX
        # session) cost, so the steady per-step figure can leave it out.
        while runner.is_alive() and len(coord.attached_agents()) < n_agents:
            runner.join(0.005)
        agent_cpu0 = {}
        for p in procs:
            t = psutil.Process(p.pid).cpu_times()
            agent_cpu0[p.pid] = t.user + t.system
        agent_cpu = {}
        while runner.is_alive():
            for p in procs:
                if p.poll() is None:
                    t = psutil.Process(p.pid).cpu_times()
                    agent_cpu[p.pid] = t.user + t.system
            runner.join(0.2)
        cpu1 = me.cpu_times()
        sampling.set()
        sampler.join()
        for p in procs:
            p.wait(30)
    finally:
        coord.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
    recs = [r for r in read_records(record) if isinstance(r, Step)]
    coord_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    result["coordinator_cpu_us_per_step"] = coord_cpu / max(1, len(recs)) * 1e6
    result["agent_cpu_us_per_step"] = statistics.mean(agent_cpu.values()) / max(1, len(recs)) * 1e6
    result["agent_steady_cpu_us_per_step"] = (
        statistics.mean(agent_cpu[pid] - agent_cpu0[pid] for pid in agent_cpu)
        / max(1, len(recs))
        * 1e6
    )
    fallbacks = sum(len(r.fallback) for r in recs)
    # Steady state: drop each episode's first 5 steps (agents warming up after EpisodeStart).
    steady = [r for r in recs if r.step >= 5]
    ex = sorted(r.exchange_us for r in steady)
    # Throughput over the whole run after the first episode (agents warm), boundaries included.
    warm = [r for r in recs if r.episode_index >= 1] or recs
    span_s = (warm[-1].t_ms - warm[0].t_ms) / 1000.0
    result["steps_per_s"] = (len(warm) - 1) / span_s if span_s > 0 else float("nan")
    result["exchange_p50_us"] = statistics.median(ex)
    result["exchange_p99_us"] = ex[int(0.99 * (len(ex) - 1))]
    result["fallbacks"] = fallbacks
    top = max(peaks.values(), key=lambda m: m["peak"])
    result["peak_rss_mib_max"] = top["peak"]
    result["peak_rss_mib_mean"] = statistics.mean(m["peak"] for m in peaks.values())
    result["peak_anon_mib"], result["peak_file_mib"] = top["anon"], top["file"]
    result["uss_mib_max"] = max(uss.values())
    decisions = sorted(us for r in steady for us in r.decision_us.values())
    result["decision_p50_us"] = statistics.median(decisions) if decisions else float("nan")
    result["steps"] = len(recs)
    return result


def warm_act_us(art: Path, calls: int = 2000) -> float:
    """p50 of `AgentPolicy.act` on ``art``'s agent_0 called back to back in this process: the
    decision with warm caches, against which the one inside a team (once per step) is compared."""
    from qmix_edge.runtime.policy import AgentPolicy

    policy = AgentPolicy.load(art, "agent_0")
    obs = np.random.default_rng(0).standard_normal(policy.obs_dim).astype(np.float32)
    mask = np.ones(policy.n_actions, dtype=bool)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        policy.act(obs, mask, known_finite=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


RAW_MODE = {"lane": "lane", "lane-grpc": "lane", "stream": "stream-aio"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="team steps with 3 agents")
    ap.add_argument("--steps16", type=int, default=1000, help="team steps with 16 agents")
    ap.add_argument("--rounds", type=int, default=3000, help="raw round trips")
    ap.add_argument(
        "--carriers",
        default="lane,lane-grpc,stream",
        help="ways to reach the coordinator to measure (default lane,lane-grpc,stream)",
    )
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the lane's floor measurements (fan-out to echo clients, echo agents)",
    )
    args = ap.parse_args(argv)
    carriers = [c for c in args.carriers.split(",") if c]
    unknown = sorted(set(carriers) - set(RAW_MODE))
    if unknown:
        ap.error(f"--carriers takes {', '.join(RAW_MODE)}; found {unknown}")
    raw = {}
    for c in carriers:
        if RAW_MODE[c] in {RAW_MODE[k] for k in raw}:  # the same transport: measured once
            raw[c] = next(raw[k] for k in raw if RAW_MODE[k] == RAW_MODE[c])
            continue
        with Steal() as steal:
            raw[c] = raw_round_trip(RAW_MODE[c], args.rounds)
        print(
            f"raw round trip, {RAW_MODE[c]}: p50 {raw[c][0]:.0f} us, p99 {raw[c][1]:.0f} us "
            f"(host steal {steal.percent:.1f} %)"
        )
    floor: dict[str, float] = {}
    if "lane" in carriers and not args.no_floor:
        with Steal() as steal:
            floor["fan_out"] = raw_round_trip("lane", args.rounds, clients=3)[0]
        print(
            f"raw fan-out, lane, 3 echo clients: p50 {floor['fan_out']:.0f} us "
            f"(host steal {steal.percent:.1f} %)"
        )
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="qmix-bench-") as d:
        if floor:
            with Steal() as steal:
                echo = run_team(3, args.steps, Path(d), "lane", echo=True)
            floor["echo_team"] = echo["exchange_p50_us"]
            print(
                f"lane       3 echo agents (no policy): exchange p50 {echo['exchange_p50_us']:.0f} us, "
                f"{echo['steps_per_s']:.0f} team steps/s, host steal {steal.percent:.1f} %"
            )
            floor["warm_act"] = warm_act_us(artifact_dir(Path(d), 3))
            # Fewer deciding agents than cores: does the ratio hold when each agent has a core?
            for k in (1, 2):
                with Steal() as steal:
                    small = run_team(k, args.steps, Path(d), "lane")
                floor[f"team{k}"] = small["exchange_p50_us"]
                print(
                    f"lane       {k} agent{'s' if k > 1 else ''}: exchange p50 "
                    f"{small['exchange_p50_us']:.0f} us, decision p50 {small['decision_p50_us']:.0f} "
                    f"us, host steal {steal.percent:.1f} %"
                )
        for c in carriers:
            for n, steps in ((3, args.steps), (16, args.steps16)):
                with Steal() as steal:
                    r = results[c, n] = run_team(n, steps, Path(d), c)
                print(
                    f"{c:<9} {n:>2} agents: {int(r['steps'])} team steps, exchange p50 "
                    f"{r['exchange_p50_us']:.0f} us (p99 {r['exchange_p99_us']:.0f}), "
                    f"{r['steps_per_s']:.0f} team steps/s (goal >= {1500 if n == 3 else 200}), "
                    f"fallbacks {int(r['fallbacks'])}, agent peak RSS max "
                    f"{r['peak_rss_mib_max']:.1f} MiB (mean {r['peak_rss_mib_mean']:.1f}; goal < 80), "
                    f"host steal {steal.percent:.1f} %"
                )
                print(
                    f"          that agent's memory: {r['peak_anon_mib']:.1f} MiB its own (RssAnon) + "
                    f"{r['peak_file_mib']:.1f} MiB of mapped files (RssFile, shared libraries); "
                    + (
                        f"USS max {r['uss_mib_max']:.1f} MiB"
                        if r["uss_mib_max"] > 0
                        else "USS not sampled (sampled once a second; the run was shorter)"
                    )
                )
                print(
                    f"          CPU per team step: coordinator {r['coordinator_cpu_us_per_step']:.0f} us, "
                    f"each agent {r['agent_cpu_us_per_step']:.0f} us incl. start-up, "
                    f"{r['agent_steady_cpu_us_per_step']:.0f} us after the team joined"
                )
                if n == 3:
                    print(
                        f"          ratio team step p50 / raw {RAW_MODE[c]} round trip p50 = "
                        f"{r['exchange_p50_us'] / raw[c][0]:.2f} (goal <= 2)"
                    )
    if floor:
        base, team = raw["lane"][0], results["lane", 3]
        print(
            "where the lane's 3-agent team step goes (p50, this run; ratio to the raw round trip):"
        )
        for label, us in (
            ("raw round trip, 1 echo client", base),
            ("raw fan-out, 3 echo clients", floor["fan_out"]),
            ("coordinator + 3 echo agents", floor["echo_team"]),
            ("coordinator + 1 policy agent", floor["team1"]),
            ("coordinator + 2 policy agents", floor["team2"]),
            ("coordinator + 3 policy agents", team["exchange_p50_us"]),
        ):
            print(f"  {label:<34} {us:7.0f} us  {us / base:5.2f}")
        print(
            f"  an agent's decision in the team: {team['decision_p50_us']:.0f} us; the same act() "
            f"back to back in one process: {floor['warm_act']:.0f} us"
        )
    if "lane" in carriers and "stream" in carriers:
        for n in (3, 16):
            lane_r, stream_r = results["lane", n], results["stream", n]
            print(
                f"lane vs stream, {n:>2} agents: {lane_r['steps_per_s'] / stream_r['steps_per_s']:.2f}x "
                f"team steps/s, exchange p50 {stream_r['exchange_p50_us'] / lane_r['exchange_p50_us']:.2f}x lower"
            )
        print(
            f"lane 3-agent team step p50 / raw gRPC stream round trip p50 = "
            f"{results['lane', 3]['exchange_p50_us'] / raw['stream'][0]:.2f}"
        )
    if "lane" in carriers and "lane-grpc" in carriers:
        for n in (3, 16):
            lean, full = results["lane", n], results["lane-grpc", n]
            print(
                f"agent peak RSS without gRPC vs with, {n:>2} agents: {lean['peak_rss_mib_max']:.1f} "
                f"vs {full['peak_rss_mib_max']:.1f} MiB "
                f"({full['peak_rss_mib_max'] - lean['peak_rss_mib_max']:.1f} MiB less)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
