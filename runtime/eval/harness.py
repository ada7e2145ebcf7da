"""qmix-eval: simulated multi-device evaluation, with a single-process reference and fault plans.

Owns the evaluation harness: it starts one `qmix-coordinator` and one `qmix-agent` OS process per
agent on loopback (port 0), runs the episodes, injects the faults of a plan, restarts what the plan
kills, and then runs the same artifacts in one process (the reference: `AgentPolicy` objects
stepping the same environment with the same per-episode seeds). The report (JSON, a human summary,
a PNG beside it) compares the two episode by episode and lists latency percentiles, decision
times, fallbacks, late replies and rejoins, all computed from the coordinator's run record.

With no faults every episode's distributed return equals its reference return exactly: the agents
run the same ONNX graphs on bit-identical float32 inputs.

Fault plan (``--faults PLAN``: inline JSON when the value starts with ``[`` or ``{``, of any length,
else the path of a JSON file; team steps count from 0 over the whole run):

    [{"kind": "kill", "agent": "agent_0", "at_step": 5, "restart_after_ms": 300},
     {"kind": "stall", "agent": "agent_1", "at_step": 12, "duration_ms": 600},
     {"kind": "drop", "agent": "agent_1", "fraction": 0.2, "seed": 0},
     {"kind": "restart_coordinator", "at_step": 20, "restart_after_ms": 200}]

Security: with ``--tls-ca/--tls-cert/--tls-key`` the coordinator serves TLS; with
``--tls-agent-certs DIR`` (``<agent_id>.pem`` and ``<agent_id>.key`` per agent) it requires mutual
TLS; with ``--tokens FILE`` every agent gets its own bearer token (through a 0600 file).

Hosts: with ``--netns`` the coordinator and every agent run in their own network namespace
(`qmix_edge.runtime.netns`: veth links, a private /30 per agent, optional ``--netns-rate`` shaping),
so each agent really is another host; the namespaces are always deleted afterwards.

No torch here (the picture is `report_picture`'s: matplotlib is imported lazily, skipped with a note
if absent).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qmix_edge.common import settings

from ..errors import RuntimeFailure
from ..legal import legal_action
from ..netns import NetnsTopology, netns_unavailable
from ..records import read_records
from ..report_picture import write_picture
from .config import GROUPS as CONFIG_GROUPS
from .config import EvalConfig, EvalSecurity
from .faults import Fault, check_fault_plan

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the processes
def security_coordinator_args(self: EvalSecurity) -> list[str]:
    out: list[str] = []
    if self.server_cert and self.server_key:
        out += ["--tls-cert", str(self.server_cert), "--tls-key", str(self.server_key)]
    if self.agent_certs is not None:
        out += ["--tls-client-ca", str(self.client_ca or self.ca)]
    if self.tokens is not None:
        out += ["--tokens", str(self.tokens)]
    return out


def security_agent_args(self: EvalSecurity, agent_id: str, workdir: Path) -> list[str]:
    out: list[str] = []
    if self.ca is not None:
        out += ["--tls-ca", str(self.ca)]
        if self.server_name:
            out += ["--tls-server-name", self.server_name]
    if self.agent_certs is not None:
        out += [
            "--tls-cert",
            str(self.agent_certs / f"{agent_id}.pem"),
            "--tls-key",
            str(self.agent_certs / f"{agent_id}.key"),
        ]
    if self.tokens is not None:
        from ..security import load_tokens

        token = load_tokens(self.tokens).get(agent_id)
        if token is None:
            raise RuntimeFailure(f"--tokens {self.tokens} has no token for {agent_id}")
        path = workdir / f"{agent_id}.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        out += ["--token-file", str(path)]
    return out


class _Procs:
    """Coordinator and agent subprocesses, with restarts."""

    def __init__(
        self,
        cfg: EvalConfig,
        agent_ids: Sequence[str],
        workdir: Path,
        topology: NetnsTopology | None = None,
    ) -> None:
        self.cfg = cfg
        self.topology = topology
        self.agent_ids = list(agent_ids)
        self.workdir = workdir
        self.record = workdir / "episodes.jsonl"
        self.port_file = workdir / "coordinator.port"
        self.lane_port_file = workdir / "coordinator.lane-port"
        self.port = 0
        self.lane_port = 0  # kept across coordinator restarts, as the gRPC port is
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.coordinator_starts = 0
        self.agent_starts: dict[str, int] = defaultdict(int)
        self._logs: list[Any] = []

    def _log(self, name: str) -> Any:
        f = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(f)
        return f

    def start_coordinator(self, stop_after: int | None) -> None:
        cfg = self.cfg
        resume = self.coordinator_starts > 0
        cmd = [
            sys.executable,
            "-m",
            "qmix_edge.runtime.coordinator",
            "--artifacts",
            str(cfg.artifacts),
            "--episodes",
            str(cfg.episodes),
            "--seed",
            str(cfg.seed),
            "--port",
            str(self.port),
            "--port-file",
            str(self.port_file),
            "--step-lane-port",
            str(self.lane_port),
            "--step-lane-port-file",
            str(self.lane_port_file),
            "--record",
            str(self.record),
            "--step-deadline-ms",
            str(cfg.step_deadline_ms),
            "--lease-steps",
            str(cfg.lease_steps),
            "--team-policy",
            cfg.team_policy,
            "--team-wait-s",
            "60",
        ]
        if cfg.env:
            cmd += ["--env", cfg.env]
        cmd += security_coordinator_args(cfg.security)
        if self.topology is not None:
            # Bind every address of the coordinator's own namespace: only the agents' links.
            cmd = [*self.topology.exec_prefix(self.topology.coordinator_ns), *cmd]
            cmd += ["--host", "0.0.0.0"]
            if cfg.security.server_cert is None:
                cmd.append("--allow-insecure")  # the links exist only in our namespaces
        if cfg.episode_limit:
            cmd += ["--episode-limit", str(cfg.episode_limit)]
        if stop_after is not None:
            cmd += ["--stop-after-steps", str(stop_after)]
        if resume:
            cmd.append("--resume")
        if not cfg.step_lane:
            cmd.append("--no-step-lane")
        self.port_file.unlink(missing_ok=True)
        self.lane_port_file.unlink(missing_ok=True)
        log.info("starting the coordinator%s", " (resume)" if resume else "")
        self.coordinator = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log("coordinator")
        )
        self.coordinator_starts += 1
        deadline = time.monotonic() + 120
        wanted = [self.port_file, self.lane_port_file] if cfg.step_lane else [self.port_file]
        while not all(f.exists() for f in wanted):
            if self.coordinator.poll() is not None:
                raise RuntimeFailure(
                    f"the coordinator exited with {self.coordinator.returncode} before serving: "
                    f"{self.why('coordinator')}"
                )
            if time.monotonic() > deadline:
                raise RuntimeFailure("the coordinator did not report its port within 120 s")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())
        if cfg.step_lane:
            self.lane_port = int(self.lane_port_file.read_text())

    def start_agent(self, agent_id: str, faults: Sequence[Fault]) -> None:
        link = self.topology.link(agent_id) if self.topology is not None else None
        host = link.coordinator_ip if link is not None else "127.0.0.1"
        cmd = [
            sys.executable,
            "-m",
            "qmix_edge.runtime.agent",
            "--artifacts",
            str(self.cfg.artifacts),
            "--agent",
            agent_id,
            *self._dial(host),
            "--backoff-max-s",
            "0.5",
            "--give-up-s",
            "120",
        ]
        cmd += security_agent_args(self.cfg.security, agent_id, self.workdir)
        if self.topology is not None and link is not None:
            cmd = [*self.topology.exec_prefix(link.namespace), *cmd]
            if self.cfg.security.ca is None:
                cmd.append("--allow-insecure")
        first = self.agent_starts[agent_id] == 0
        inject: list[str] = []  # the fault flags of this start (faulty_agent's, before "--")
        for f in faults:
            if f.agent != agent_id:
                continue
            if f.kind == "kill" and first:
                inject += ["--kill-at-step", str(f.at_step)]
            elif f.kind == "stall" and first:
                inject += ["--stall-at-step", str(f.at_step), "--stall-ms", str(f.duration_ms)]
            elif f.kind == "drop":
                inject += ["--drop-fraction", str(f.fraction), "--drop-seed", str(f.seed)]
        if inject:  # the same qmix-agent, behind the eval-only fault injector
            at = cmd.index("qmix_edge.runtime.agent")
            cmd[at : at + 1] = ["qmix_edge.runtime.eval.faulty_agent", *inject, "--"]
        self.agents[agent_id] = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log(agent_id)
        )
        self.agent_starts[agent_id] += 1

    def why(self, name: str) -> str:
        """A child's own last error line and where its whole log is: what a failure message
        quotes, so the cause is on the terminal the user is looking at."""
        path = self.workdir / f"{name}.log"
        for f in self._logs:
            f.flush()
        return f"{last_error_line(path)} (full log: {path})"

    def _dial(self, host: str) -> list[str]:
        """The flag and address by which an agent reaches the coordinator at ``host``."""
        if self.cfg.lane_only:
            return ["--step-lane-address", f"{host}:{self.lane_port}"]
        return ["--coordinator", f"{host}:{self.port}"]

    def close(self) -> None:
        procs = [p for p in [self.coordinator, *self.agents.values()] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for f in self._logs:
            f.close()


def last_error_line(log_path: Path) -> str:
    """The last ERROR or CRITICAL message of a child's log without its time and logger prefix,
    else its last line (an argparse usage error, the end of a traceback)."""
    try:
        lines = [x.strip() for x in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no log)"
    lines = [x for x in lines if x]
    for line in reversed(lines):
        for level in (" ERROR ", " CRITICAL "):
            if level in f" {line}":
                text = f" {line}".split(level, 1)[1]
                head, sep, rest = text.partition(": ")
                # "<logger>: msg" or "<agent> <logger>: msg" (qmix-agent's format)
                return rest if sep and ("qmix_edge" in head or "__main__" in head) else text
    return lines[-1] if lines else "(empty log)"


def run_distributed(
    cfg: EvalConfig,
    agent_ids: Sequence[str],
    workdir: Path,
    topology: NetnsTopology | None = None,
) -> dict[str, Any]:
    """Run the episodes with one process per agent; returns process facts (restarts, wall time)."""
    procs = _Procs(cfg, agent_ids, workdir, topology)
    restarts = sorted(
        (f for f in cfg.faults if f.kind == "restart_coordinator"), key=lambda f: f.at_step
    )
    kills = {f.agent: f for f in cfg.faults if f.kind == "kill"}
    t0 = time.monotonic()
    try:
        procs.start_coordinator(stop_after=restarts[0].at_step + 1 if restarts else None)
        for a in agent_ids:
            procs.start_agent(a, cfg.faults)
        pending_restart: dict[str, float] = {}
        while True:
            if time.monotonic() - t0 > cfg.timeout_s:
                raise RuntimeFailure(f"the evaluation did not finish within {cfg.timeout_s:.0f} s")
            coord = procs.coordinator
            assert coord is not None
            if coord.poll() is not None:
                if coord.returncode != 0:
                    raise RuntimeFailure(
                        f"the coordinator failed (exit {coord.returncode}): "
                        f"{procs.why('coordinator')}"
                    )
                ends = [r for r in read_records(procs.record) if r["type"] == "run_end"]
                if ends and ends[-1]["finished"]:
                    break
                fault = restarts.pop(0) if restarts else None
                down = (fault.restart_after_ms if fault else 200) / 1000.0
                log.info("coordinator stopped; restarting in %.2f s", down)
                time.sleep(down)
                procs.start_coordinator(stop_after=restarts[0].at_step + 1 if restarts else None)
            for a, p in list(procs.agents.items()):
                if p.poll() is None or a in pending_restart:
                    continue
                if p.returncode == 0:
                    continue  # run finished for this agent
                kill = kills.get(a)
                if kill is not None and procs.agent_starts[a] == 1:
                    log.info("agent %s died (exit %d) as planned", a, p.returncode)
                    pending_restart[a] = time.monotonic() + kill.restart_after_ms / 1000.0
                else:
                    raise RuntimeFailure(f"agent {a} exited with {p.returncode}: {procs.why(a)}")
            for a, when in list(pending_restart.items()):
                if time.monotonic() >= when:
                    log.info("restarting agent %s", a)
                    procs.start_agent(a, cfg.faults)
                    del pending_restart[a]
            time.sleep(0.01)
        for p in procs.agents.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                log.warning("an agent did not exit after the run finished; terminating it")
    finally:
        procs.close()
    return {
        "wall_s": time.monotonic() - t0,
        "coordinator_starts": procs.coordinator_starts,
        "agent_starts": dict(procs.agent_starts),
        "record": str(procs.record),
        "netns": None
        if topology is None
        else {
            "coordinator": topology.coordinator_ns,
            "agents": {x.agent_id: [x.namespace, x.agent_ip] for x in topology.links},
            "rate": topology.rate,
            "shaped": topology.shaped,
        },
    }


# ------------------------------------------------------------------------------ reference
def run_reference(
    cfg: EvalConfig, agent_ids: Sequence[str], substituted: Collection[str] = ()
) -> list[float]:
    """The same artifacts in one process: one AgentPolicy per agent, same env, same seeds.

    Every action goes through the legal-action rule the coordinator applies. The agents named in
    ``substituted`` never decide: each of their steps is the rule's substitute (the fallback
    action if allowed, else the lowest allowed one), which is what the coordinator applies for a
    seat that is empty or whose every reply is invalid."""
    from ..coordinator import TeamSpec, make_team_env
    from ..policy import AgentPolicy

    unknown = sorted(set(substituted) - set(agent_ids))
    if unknown:
        raise ValueError(f"substituted agents {unknown} are not in the team {list(agent_ids)}")
    team = TeamSpec.from_artifacts(cfg.artifacts)
    env = make_team_env(team, cfg.env, cfg.episode_limit)
    policies = [AgentPolicy.load(cfg.artifacts, a) for a in agent_ids]
    deciding = [a not in substituted for a in agent_ids]
    returns = []
    try:
        for i in range(cfg.episodes):
            ts = env.reset(seed=cfg.seed + i)
            for p in policies:
                p.reset()
            total = 0.0
            for _ in range(env.spec.episode_limit):
                actions = np.zeros(len(policies), dtype=np.int64)  # (n_agents,)
                for k, p in enumerate(policies):
                    if ts.alive[k]:
                        obs = ts.obs[k, : p.obs_dim]  # (obs_dim,) float32
                        mask = np.array(ts.avail[k, : p.n_actions], dtype=bool)  # (n_actions,)
                        reply = int(p.act(obs, mask).action) if deciding[k] else None
                        actions[k] = legal_action(reply, p.fallback_action, p.n_actions, mask)
                result = env.step(actions)
                total += float(result.reward)
                ts = result.next
                if result.done:
                    break
            returns.append(total)
    finally:
        env.close()
    return returns


# --------------------------------------------------------------------------------- report
def _percentiles(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    a = np.asarray(xs, dtype=np.float64)
    return {
        "n": len(xs),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


def build_report(
    cfg: EvalConfig,
    agent_ids: Sequence[str],
    records: Sequence[Mapping[str, Any]],
    reference: Sequence[float],
    facts: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the run record says, set against the reference returns."""
    ends: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["type"] == "episode_end" and r["reason"] != "stopped":
            ends[int(r["episode_index"])] = dict(r)
    steps = [r for r in records if r["type"] == "step"]
    latency = [float(r["exchange_us"]) for r in steps]
    per_agent: dict[str, dict[str, Any]] = {
        a: {
            "fallbacks": 0,
            "invalid": 0,
            "late_replies": 0,
            "joins": 0,
            "decision_us": [],
            "carriers": set(),
            "joined_via": set(),
        }
        for a in agent_ids
    }
    per_episode_fallbacks: dict[int, int] = defaultdict(int)
    per_episode_late: dict[int, int] = defaultdict(int)
    per_episode_invalid: dict[int, int] = defaultdict(int)
    for r in steps:
        for a in r["fallback"]:
            per_agent[a]["fallbacks"] += 1
        per_episode_fallbacks[int(r["episode_index"])] += len(r["fallback"])
        for a in r.get("invalid", ()):  # records written before invalid replies were listed
            per_agent[a]["invalid"] += 1
            per_episode_invalid[int(r["episode_index"])] += 1
        for a, k in r["late"].items():
            per_agent[a]["late_replies"] += int(k)
            per_episode_late[int(r["episode_index"])] += int(k)
        for a, us in r["decision_us"].items():
            per_agent[a]["decision_us"].append(float(us))
    for r in records:
        if r["type"] == "join":
            per_agent[r["agent_id"]]["joins"] += 1
            per_agent[r["agent_id"]]["joined_via"].add(r.get("via", "grpc"))
        elif r["type"] == "attach":
            per_agent[r["agent_id"]]["carriers"].add(r["carrier"])
    starts = int(facts.get("coordinator_starts", 1))
    agents_out = {}
    for a, d in per_agent.items():
        # Every coordinator restart makes every agent join again; those are not agent faults.
        agents_out[a] = {
            "fallbacks": d["fallbacks"],  # steps the legal-action rule replaced (missing/invalid)
            "invalid": d["invalid"],  # replies out of range or masked (among the fallbacks)
            "late_replies": d["late_replies"],
            "joins": d["joins"],
            "rejoins": max(0, d["joins"] - 1),
            "rejoins_after_agent_faults": max(0, d["joins"] - starts),
            "decision_us": _percentiles(d["decision_us"]),
            "carriers": sorted(d["carriers"]),  # "lane" / "stream": what its steps travelled on
            "joined_via": sorted(d["joined_via"]),  # "lane" (no gRPC in the agent) / "grpc"
        }
    episodes = []
    for i in range(cfg.episodes):
        e = ends.get(i)
        ref = reference[i] if i < len(reference) else None
        ret = e["return"] if e else None
        episodes.append(
            {
                "episode_index": i,
                "seed": cfg.seed + i,
                "return": ret,
                "reference_return": ref,
                "equal": ret is not None and ret == ref,
                "steps": e["steps"] if e else None,
                "reason": e["reason"] if e else "missing",
                "fallbacks": per_episode_fallbacks.get(i, 0),
                "invalid": per_episode_invalid.get(i, 0),
                "late_replies": per_episode_late.get(i, 0),
                "absent": e.get("absent", []) if e else [],  # seats empty at some step
                "error": e.get("error") if e else None,  # reason env_error: what the env raised
            }
        )
    done = [e for e in episodes if e["return"] is not None]
    mean_ret = float(np.mean([e["return"] for e in done])) if done else None
    mean_ref = float(np.mean(reference)) if len(reference) else None
    return {
        "artifacts": str(cfg.artifacts),
        "env": cfg.env,
        "seed": cfg.seed,
        "step_deadline_ms": cfg.step_deadline_ms,
        "n_episodes": cfg.episodes,
        "faults": [asdict(f) for f in cfg.faults],
        "parity": {
            "all_equal": all(e["equal"] for e in episodes),
            "unequal_episodes": [e["episode_index"] for e in episodes if not e["equal"]],
        },
        "mean_return": mean_ret,
        "mean_reference_return": mean_ref,
        "fault_cost": (mean_ref - mean_ret)
        if mean_ret is not None and mean_ref is not None
        else None,
        "fault_cost_means": FAULT_COST_MEANS,
        "team_steps": len(steps),
        "step_latency_us": _percentiles(latency),
        "agents": agents_out,
        "totals": {
            "fallbacks": sum(d["fallbacks"] for d in agents_out.values()),
            "invalid": sum(d["invalid"] for d in agents_out.values()),
            "late_replies": sum(d["late_replies"] for d in agents_out.values()),
            "incomplete_team_episodes": sum(1 for e in episodes if e["absent"]),
            "env_errors": sum(1 for e in episodes if e["reason"] == "env_error"),
            "rejoins": sum(d["rejoins_after_agent_faults"] for d in agents_out.values()),
            "coordinator_restarts": starts - 1,
        },
        "process": dict(facts),
        "episodes": episodes,
    }


FAULT_COST_MEANS = (
    "reference mean minus distributed mean: positive = the faults lowered the team return, "
    "negative = the faulty run happened to score higher"
)
"""What the report's ``fault_cost`` is, said in the report itself and its summary."""


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _why_unequal(report: Mapping[str, Any]) -> str:
    """Whether the unequal episodes are explained by fallbacks or late replies (faults at work)
    or diverged without one (what parity exists to catch)."""
    unexplained = [
        e["episode_index"]
        for e in report["episodes"]
        if not e["equal"] and e["return"] is not None and not (e["fallbacks"] or e["late_replies"])
    ]
    if unexplained:
        return f"; {unexplained} had no fallback nor late reply: a real divergence"
    return " (each had a fallback or a late reply, or did not finish)"


def summary_text(report: Mapping[str, Any]) -> str:
    lat = report["step_latency_us"]
    t = report["totals"]
    lines = [
        f"{report['n_episodes']} episodes, {report['team_steps']} team steps, "
        f"{len(report['faults'])} faults planned",
        f"mean return {_num(report['mean_return'])}  (reference "
        f"{_num(report['mean_reference_return'])}); return the faults cost "
        f"{_num(report['fault_cost'])} ({FAULT_COST_MEANS})",
        "parity: every episode equal to the reference"
        if report["parity"]["all_equal"]
        else f"parity: episodes {report['parity']['unequal_episodes']} differ from the reference"
        + _why_unequal(report),
    ]
    if lat.get("n"):
        lines.append(
            f"step latency us: p50 {lat['p50']:.0f}  p90 {lat['p90']:.0f}  p99 {lat['p99']:.0f}"
        )
    lines.append(
        f"fallbacks {t['fallbacks']} (invalid replies {t['invalid']}), late replies "
        f"{t['late_replies']}, agent rejoins {t['rejoins']}, coordinator restarts "
        f"{t['coordinator_restarts']}"
    )
    if t["incomplete_team_episodes"] or t["env_errors"]:
        lines.append(
            f"episodes with an incomplete team {t['incomplete_team_episodes']}, ended by an "
            f"environment error {t['env_errors']}"
        )
    for a, d in report["agents"].items():
        dec = d["decision_us"]
        p50 = f"{dec['p50']:.0f}" if dec.get("n") else "-"
        lines.append(
            f"  {a}: decision p50 {p50} us, fallbacks {d['fallbacks']}, invalid {d['invalid']}, "
            f"late {d['late_replies']}, joins {d['joins']}"
        )
    return "\n".join(lines)


def _atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def evaluate(cfg: EvalConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Run the distributed evaluation and the reference; write the report; return it."""
    from ..artifact import Manifest

    manifest = Manifest.load(cfg.artifacts)
    agent_ids = list(manifest.agent_ids)
    cfg.report.parent.mkdir(parents=True, exist_ok=True)
    # Without --workdir the records and logs live in a temporary folder, removed after a run
    # that succeeded and kept (and named) after one that failed.
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="qmix-eval-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if cfg.netns:
            with NetnsTopology(agent_ids, rate=cfg.netns_rate) as topology:
                facts = run_distributed(cfg, agent_ids, workdir, topology)
        else:
            facts = run_distributed(cfg, agent_ids, workdir)
        records = list(read_records(workdir / "episodes.jsonl"))
        reference = run_reference(cfg, agent_ids)
    except BaseException:
        log.error("the failed run's records and logs are kept in %s", workdir)
        raise
    report = build_report(cfg, agent_ids, records, reference, facts)
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
        report["process"]["record"] = None  # removed with the work folder (keep it: --workdir)
    report["workdir"] = None if own else str(workdir)
    _atomic_write_json(cfg.report, report)
    report["picture_note"] = write_picture(report, records, cfg.report.with_suffix(".png"))
    return report


DESCRIPTION = """\
Evaluate exported agents as a team of separate processes: a coordinator and one
qmix-agent per agent on loopback, optional injected faults, and the same artifacts
run in one process as the reference. Without faults every episode's return must
equal the reference's.

example:
  qmix-eval --artifacts artifacts/run1 --env two_step --episodes 20 --seed 0 \\
      --report reports/run1/report.json --faults '[{"kind": "kill", "agent": "agent_0", "at_step": 5}]'
"""


def build_parser() -> argparse.ArgumentParser:
    """qmix-eval's flags: the fields of `EvalConfig`."""
    return settings.build_parser(EvalConfig, "qmix-eval", DESCRIPTION, titles=CONFIG_GROUPS)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, _ = settings.parse(EvalConfig, build_parser(), argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    logging.basicConfig(level=cfg.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        from ..artifact import Manifest

        agent_ids = Manifest.load(cfg.artifacts).agent_ids
        check_fault_plan(cfg.faults, agent_ids)
        cfg.security.check(agent_ids)
        if cfg.netns and (why := netns_unavailable()) is not None:
            raise RuntimeFailure(f"--netns: {why}")
    except Exception as e:
        log.error("%s: %s", type(e).__name__, e)
        return 2
    try:
        report = evaluate(cfg, cfg.workdir)
    except Exception as e:
        log.error("evaluation failed: %s: %s", type(e).__name__, e)
        return 1
    sys.stdout.write(summary_text(report) + "\n")
    sys.stdout.write(f"{report['picture_note']}\nreport written to {cfg.report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
