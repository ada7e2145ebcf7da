"""The field team under mission control: a dead mission control, and a signed rollout.

Part A, mission control killed mid-mission (`qmix-eval --field`): a 3-agent simple_spread team
(GRU agents, exported untrained: the figure is faithful execution, not skill) flies --episodes
episodes at --rate-hz on its own clocks against the real-time world, undisturbed (the baseline)
and with mission control SIGKILLed one step into the middle episode and restarted with --resume
after --restart-after-ms. Printed: the middle episode's return in both runs and their relative
difference (goal: within 10 %), the longest time any agent went without deciding in that episode
in control periods (goal: at most 2), the start agreement across the agents' processes, and the
lockstep reference's return for the same seed.

Part B, rollout: mission control (`qmix-coordinator --mode mission`) and 3 `qmix-agent --rate-hz`
processes with their own artifact stores fly 1-second episodes; `qmix-deploy` offers a signed
3-agent set v2. Printed: the time from the offer to every agent running v2 (goal: under 2 s on
loopback), the episode they switched at, and beside it the baseline, the time to verify and
install the same set from a local folder in one process (what each agent does after download).
Then a tampered copy of v2 (one byte of one graph changed, the signed manifest kept) is offered:
every agent must refuse it and the team must stay on v2.

    .venv/bin/python bench/field_mission.py [--episodes 6] [--rate-hz 20]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(out: Path, env_id: str, n_agents: int, seed: int, sign_key: Path | None) -> Path:
    import torch

    from qmix_edge.envs import make_env
    from qmix_edge.export import export_agent_networks
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    env = make_env(env_id, n_agents=n_agents)
    net = AgentNetwork(env.spec, kind="gru", hidden_dim=64, use_prev_action=True)
    export_agent_networks(
        net,
        env.spec,
        out,
        run_id=f"bench-{env_id}-{seed}",
        env=env,
        env_options={"n_agents": n_agents},
        synthetic_episodes=1,
        env_episodes=1,
        sign_key=sign_key,
    )
    env.close()
    return out


def part_a(work: Path, episodes: int, rate_hz: float, restart_after_ms: int) -> None:
    from qmix_edge.runtime.eval.cli import main as qmix_eval

    art = export(work / "spread", "simple_spread", 3, 0, None)
    report = work / "field.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = qmix_eval(
            [
                "--artifacts", str(art), "--field", "--episodes", str(episodes),
                "--field-rate-hz", str(rate_hz), "--field-scenarios",
                "own_clocks,coordinator_killed", "--field-restart-after-ms",
                str(restart_after_ms), "--report", str(report), "--workdir", str(work / "eval"),
            ]
        )  # fmt: skip
    print(out.getvalue())
    if code != 0:
        raise SystemExit(f"qmix-eval --field failed ({code})")

    r = json.loads(report.read_text())
    goal = r["coordinator_kill_goal"]
    own, killed = r["scenarios"]["own_clocks"], r["scenarios"]["coordinator_killed"]
    m = goal["episode"]
    print("Part A: mission control killed mid-mission (3 agents, simple_spread, untrained GRU)")
    print(f"  rate {rate_hz:g} Hz, {episodes} episodes, killed one step into episode {m}")
    print(f"  lockstep reference, episode {m}:       {r['reference']['returns'][m]:.3f}")
    print(f"  baseline (undisturbed), episode {m}:   {goal['undisturbed_return']:.3f}")
    print(f"  mission control killed, episode {m}:   {goal['return']:.3f}")
    print(f"  relative difference:                  {goal['relative_difference']:.2%} (goal < 10%)")
    print(
        f"  longest gap between decisions:        {goal['decision_gap_periods']:.2f} periods "
        f"(goal <= 2; undisturbed run {own['middle_episode_gap_periods']:.2f})"
    )
    print(f"  mission control down:                 {killed['coordinator_down_s']:.2f} s")
    print(
        f"  start agreement across processes:     {own['start_spread_ms']:.2f} ms (undisturbed), "
        f"{killed['start_spread_ms']:.2f} ms (killed run); agreed instant vs first tick "
        f"{own['start_offset_ms']:.2f} ms"
    )
    print(f"  mean return: reference {r['reference']['mean']:.3f}, undisturbed "
          f"{own['mean']:.3f}, killed {killed['mean']:.3f}")  # fmt: skip
    print(f"  goal {'met' if goal['met'] else 'NOT met'}")


def _wait_port(path: Path, proc: subprocess.Popen[bytes]) -> int:
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"mission control exited with {proc.returncode}")
        time.sleep(0.05)
    return int(path.read_text())


def part_b(work: Path) -> None:
    from qmix_edge.export import generate_keypair
    from qmix_edge.runtime.agent.store import ArtifactStore
    from qmix_edge.runtime.coordinator import deploy, mission_cli
    from qmix_edge.runtime.rollout import artifact_version

    priv, pub = generate_keypair(work / "keys")
    v1 = export(work / "v1", "simple_spread", 3, 1, priv)
    v2 = export(work / "v2", "simple_spread", 3, 2, priv)
    # An attacker without the signing key: one byte of a graph changed and the manifest's hash of
    # it updated, so the set is self-consistent and only the signature can tell.
    bad = work / "v2_tampered"
    shutil.copytree(v2, bad)
    graph = bad / "agent_0.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["agents"][0]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    t0 = time.perf_counter()
    store = ArtifactStore(work / "local_store", public_key=pub)
    store.activate(store.add_local(v2))
    local_install_s = time.perf_counter() - t0

    logs = [open(work / f"{n}.log", "wb") for n in ("coord", "a0", "a1", "a2")]  # noqa: SIM115
    coord = subprocess.Popen(
        [
            sys.executable, "-m", "qmix_edge.runtime.coordinator", "--artifacts", str(v1),
            "--mode", "mission", "--episode-limit", "10", "--step-period-ms", "100",
            "--episodes", "0", "--start-lead-ms", "200", "--port", "0",
            "--port-file", str(work / "port"), "--record", str(work / "mission.jsonl"),
            "--public-key", str(pub),
        ],
        stderr=logs[0],
    )  # fmt: skip
    port = _wait_port(work / "port", coord)
    agents = []
    for i in range(3):
        agents.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "qmix_edge.runtime.agent", "--artifacts", str(v1),
                    "--agent", f"agent_{i}", "--rate-hz", "10", "--coordinator",
                    f"127.0.0.1:{port}", "--store", str(work / f"store_{i}"),
                    "--public-key", str(pub), "--episode-limit", "10",
                    "--sensor", "examples.field_plugin:read_sensors",
                    "--actuator", "examples.field_plugin:actuate",
                ],
                stderr=logs[i + 1],
                cwd=ROOT,
            )
        )  # fmt: skip
    address = ["--coordinator", f"127.0.0.1:{port}"]
    try:
        while True:  # the team linked and flying
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                mission_cli.main(address)
            if out.getvalue().count(": linked") == 3 and "running" in out.getvalue():
                break
            time.sleep(0.2)
        out = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = deploy.main([*address, "--artifacts", str(v2), "--timeout-s", "60"])
        rollout_s = time.perf_counter() - t0
        print("Part B: signed rollout of a 3-agent set to 3 agents on loopback (1 s episodes)")
        print("  " + out.getvalue().strip().replace("\n", "\n  "))
        print(
            f"  offer -> every agent running v2:      {rollout_s:.2f} s (goal < 2 s), exit {code}"
        )
        print(f"  baseline, verify + install locally:   {local_install_s:.3f} s")
        print(f"  ratio rollout / local install:        {rollout_s / local_install_s:.1f}x")
        versions = {i: ArtifactStore(work / f"store_{i}").current for i in range(3)}
        same = all(v == artifact_version(v2) for v in versions.values())
        print(f"  every store's current version is v2:  {same}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = deploy.main([*address, "--artifacts", str(bad), "--timeout-s", "30"])
        print(f"  tampered set offered: qmix-deploy exit {code}")
        print("  " + out.getvalue().strip().replace("\n", "\n  "))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # every agent's own verdict
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                mission_cli.main(address)
            if out.getvalue().count("rollout failed") == 3:
                break
            time.sleep(0.2)
        print("  " + out.getvalue().strip().replace("\n", "\n  "))
        refused = out.getvalue().count("rollout failed")
        versions = {i: ArtifactStore(work / f"store_{i}").current for i in range(3)}
        still = all(v == artifact_version(v2) for v in versions.values())
        print(f"  agents that refused the tampered set: {refused} of 3; team still on v2: {still}")
    finally:
        for p in [*agents, coord]:
            p.terminate()
        for p in [*agents, coord]:
            p.wait(10)
        for f in logs:
            f.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--rate-hz", type=float, default=20.0)
    ap.add_argument("--restart-after-ms", type=int, default=1000)
    ap.add_argument("--part", choices=("a", "b", "both"), default="both")
    ap.add_argument("--workdir", help="keep the artifacts, records and logs here")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start, {os.cpu_count()} cores")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-field-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.part in ("a", "both"):
        part_a(work, args.episodes, args.rate_hz, args.restart_after_ms)
    if args.part in ("b", "both"):
        part_b(work)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
