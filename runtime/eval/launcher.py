"""qmix-eval's processes: one ``qmix-coordinator`` and one ``qmix-agent`` per agent, started,
watched, restarted and stopped as the fault plan says.

Every child's command line is built from its command's own declaration
(``settings.to_argv(CoordinatorConfig(...))``, ``settings.to_argv(AgentConfig(...))``), so the
harness passes exactly the flags those parsers read. An agent with a fault in the plan runs through
``python -m qmix_edge.runtime.eval.faulty_agent [FAULT FLAGS] -- [qmix-agent flags]``: the same
agent with failures injected, which the device's own ``qmix-agent`` never carries. Every wait here
comes from the `EvalConfig` (team wait, start-up, reconnect backoff and give-up, stop grace).

With a `NetnsTopology` the coordinator and every agent run in their own network namespace. No
torch here.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from qmix_edge.common import atomic, settings

from ..agent.config import AgentConfig
from ..coordinator.config import CoordinatorConfig
from ..errors import RuntimeFailure
from ..netns import NetnsTopology
from ..records import RunEnd, read_records
from ..security import load_tokens
from .config import EvalConfig
from .faults import Fault

log = logging.getLogger(__name__)

POLL_S = 0.01
"""How often the harness looks at its children (a poll interval, not a timeout)."""
RECORD_FILE = "episodes.jsonl"
"""The coordinator's run record, in the work folder."""
FAULTY_AGENT = "qmix_edge.runtime.eval.faulty_agent"
"""The module that runs a qmix-agent with failures injected (eval-only)."""


# ------------------------------------------------------------------------- the command lines
def coordinator_config(
    cfg: EvalConfig,
    workdir: Path,
    *,
    port: int,
    lane_port: int,
    stop_after: int | None,
    resume: bool,
    in_netns: bool,
) -> CoordinatorConfig:
    """What the coordinator of this evaluation is told (its ports: 0 on the first start, then the
    same ones again so the agents find it after a restart)."""
    sec = cfg.security
    return CoordinatorConfig(
        artifacts=str(cfg.artifacts),
        env=cfg.env,
        episodes=cfg.episodes,
        seed=cfg.seed,
        episode_limit=cfg.episode_limit,
        team_policy=cfg.team_policy,
        team_wait_s=cfg.team_wait_s,
        record=str(workdir / RECORD_FILE),
        resume=resume,
        stop_after_steps=stop_after,
        step_deadline_ms=cfg.step_deadline_ms,
        lease_steps=cfg.lease_steps,
        # In its own namespace it binds every address there: only the agents' links.
        host="0.0.0.0" if in_netns else "127.0.0.1",
        port=port,
        port_file=str(workdir / "coordinator.port"),
        step_lane=cfg.step_lane,
        step_lane_port=lane_port,
        step_lane_port_file=str(workdir / "coordinator.lane-port"),
        tls_cert=_str(sec.server_cert),
        tls_key=_str(sec.server_key),
        tls_client_ca=_str(sec.client_ca or sec.ca) if sec.agent_certs is not None else None,
        tokens=_str(sec.tokens),
        allow_insecure=in_netns and sec.server_cert is None,  # links only in our namespaces
    )


def agent_config(
    cfg: EvalConfig, agent_id: str, address: str, token_file: Path | None, *, in_netns: bool
) -> AgentConfig:
    """What one agent is told; ``address`` is the coordinator's gRPC port, or its step lane when
    the agents dial the lane alone (`EvalConfig.lane_only`)."""
    sec = cfg.security
    certs = sec.agent_certs
    return AgentConfig(
        artifacts=str(cfg.artifacts),
        agent=agent_id,
        coordinator=None if cfg.lane_only else address,
        step_lane_address=address if cfg.lane_only else None,
        backoff_max_s=cfg.agent_backoff_max_s,
        give_up_s=cfg.agent_give_up_s,
        tls_ca=_str(sec.ca),
        tls_server_name=sec.server_name if sec.ca is not None else None,
        tls_cert=str(certs / f"{agent_id}.pem") if certs is not None else None,
        tls_key=str(certs / f"{agent_id}.key") if certs is not None else None,
        token_file=_str(token_file),
        allow_insecure=in_netns and sec.ca is None,
    )


def fault_flags(faults: Sequence[Fault], agent_id: str, first_start: bool) -> list[str]:
    """The faulty agent's flags for ``agent_id``'s faults: a kill or a stall strikes the first
    process only (the restarted one runs clean), a drop every process."""
    out: list[str] = []
    for f in faults:
        if f.agent != agent_id:
            continue
        if f.kind == "kill" and first_start:
            out += ["--kill-at-step", str(f.at_step)]
        elif f.kind == "stall" and first_start:
            out += ["--stall-at-step", str(f.at_step), "--stall-ms", str(f.duration_ms)]
        elif f.kind == "drop":
            out += ["--drop-fraction", str(f.fraction), "--drop-seed", str(f.seed)]
    return out


def agent_command(agent: AgentConfig, faults: Sequence[str] = ()) -> list[str]:
    """``qmix-agent``'s command line, or the faulty agent's when ``faults`` holds fault flags."""
    flags = settings.to_argv(agent)
    if faults:
        return [sys.executable, "-m", FAULTY_AGENT, *faults, "--", *flags]
    return [sys.executable, "-m", "qmix_edge.runtime.agent", *flags]


def coordinator_command(coordinator: CoordinatorConfig) -> list[str]:
    """``qmix-coordinator``'s command line."""
    return [sys.executable, "-m", "qmix_edge.runtime.coordinator", *settings.to_argv(coordinator)]


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


# ------------------------------------------------------------------------------ the processes
class Processes:
    """The coordinator and agent subprocesses of one evaluation, with restarts; `close` stops
    every one of them."""

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
        self.record = workdir / RECORD_FILE
        self.port_file = workdir / "coordinator.port"
        self.lane_port_file = workdir / "coordinator.lane-port"
        self.port = 0
        self.lane_port = 0  # kept across coordinator restarts, as the gRPC port is
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.coordinator_starts = 0
        self.agent_starts: dict[str, int] = defaultdict(int)
        self._logs: list[IO[bytes]] = []

    def _log(self, name: str) -> IO[bytes]:
        f = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(f)
        return f

    def start_coordinator(self, stop_after: int | None) -> None:
        """Start (or restart, resuming its record) the coordinator; return once it serves."""
        cfg = self.cfg
        resume = self.coordinator_starts > 0
        config = coordinator_config(
            cfg,
            self.workdir,
            port=self.port,
            lane_port=self.lane_port,
            stop_after=stop_after,
            resume=resume,
            in_netns=self.topology is not None,
        )
        cmd = coordinator_command(config)
        if self.topology is not None:
            cmd = [*self.topology.exec_prefix(self.topology.coordinator_ns), *cmd]
        self.port_file.unlink(missing_ok=True)
        self.lane_port_file.unlink(missing_ok=True)
        log.info("starting the coordinator%s", " (resume)" if resume else "")
        self.coordinator = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log("coordinator")
        )
        self.coordinator_starts += 1
        wanted = [self.port_file, self.lane_port_file] if cfg.step_lane else [self.port_file]
        ports = wait_for_ports(
            self.coordinator,
            wanted,
            cfg.coordinator_start_s,
            "the coordinator",
            lambda: self.why("coordinator"),
        )
        self.port = ports[0]
        if cfg.step_lane:
            self.lane_port = ports[1]

    def start_agent(self, agent_id: str, faults: Sequence[Fault]) -> None:
        """Start (or restart) one agent; its faults strike as `fault_flags` says."""
        link = self.topology.link(agent_id) if self.topology is not None else None
        host = link.coordinator_ip if link is not None else "127.0.0.1"
        port = self.lane_port if self.cfg.lane_only else self.port
        config = agent_config(
            self.cfg,
            agent_id,
            f"{host}:{port}",
            self._token_file(agent_id),
            in_netns=link is not None,
        )
        first = self.agent_starts[agent_id] == 0
        cmd = agent_command(config, fault_flags(faults, agent_id, first))
        if self.topology is not None and link is not None:
            cmd = [*self.topology.exec_prefix(link.namespace), *cmd]
        self.agents[agent_id] = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log(agent_id)
        )
        self.agent_starts[agent_id] += 1

    def _token_file(self, agent_id: str) -> Path | None:
        """The agent's bearer token in a 0600 file of the work folder (not on its command line,
        where ps shows it)."""
        tokens = self.cfg.security.tokens
        if tokens is None:
            return None
        token = load_tokens(tokens).get(agent_id)
        if token is None:
            raise RuntimeFailure(
                f"--tokens {tokens} has no token for {agent_id}; add one for every agent of the "
                "manifest"
            )
        path = self.workdir / f"{agent_id}.token"
        atomic.write_text(path, token, mode=0o600)
        return path

    def why(self, name: str) -> str:
        """A child's own last error line and where its whole log is: what a failure message
        quotes, so the cause is on the terminal the user is looking at."""
        path = self.workdir / f"{name}.log"
        for f in self._logs:
            f.flush()
        return f"{last_error_line(path)} (full log: {path})"

    def close(self) -> None:
        """Stop every child still running (SIGTERM, then SIGKILL after the grace time)."""
        grace = self.cfg.stop_grace_s
        procs = [p for p in [self.coordinator, *self.agents.values()] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(grace)
        for f in self._logs:
            f.close()


def wait_for_ports(
    proc: subprocess.Popen[bytes],
    port_files: Sequence[Path],
    timeout_s: float,
    what: str,
    why: Callable[[], str],
) -> list[int]:
    """The ports a starting coordinator writes into ``port_files``, once all exist; a clear
    `RuntimeFailure` if ``proc`` exits first or ``timeout_s`` passes. ``what`` names the process
    in those messages, ``why()`` gives its last error line and log."""
    deadline = time.monotonic() + timeout_s
    while not all(f.exists() for f in port_files):
        if proc.poll() is not None:
            raise RuntimeFailure(f"{what} exited with {proc.returncode} before serving: {why()}")
        if time.monotonic() > deadline:
            raise RuntimeFailure(
                f"{what} did not report its port within {timeout_s:g} s (--coordinator-start-s): "
                f"{why()}"
            )
        time.sleep(POLL_S)
    return [int(f.read_text()) for f in port_files]


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


def run_finished(record: Path) -> bool:
    """The run record ends with a finished run (not one stopped for a restart)."""
    ends = [r for r in read_records(record) if isinstance(r, RunEnd)]
    return bool(ends) and ends[-1].finished


def run_distributed(
    cfg: EvalConfig,
    agent_ids: Sequence[str],
    workdir: Path,
    topology: NetnsTopology | None = None,
) -> dict[str, Any]:
    """Run the episodes with one process per agent; returns process facts (restarts, wall time)."""
    procs = Processes(cfg, agent_ids, workdir, topology)
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
                raise RuntimeFailure(
                    f"the evaluation did not finish within {cfg.timeout_s:.0f} s (--timeout-s)"
                )
            coord = procs.coordinator
            if coord is not None and coord.poll() is not None:
                if coord.returncode != 0:
                    raise RuntimeFailure(
                        f"the coordinator failed (exit {coord.returncode}): "
                        f"{procs.why('coordinator')}"
                    )
                if run_finished(procs.record):
                    break
                fault = restarts.pop(0) if restarts else None
                down_ms = fault.restart_after_ms if fault else cfg.unplanned_restart_ms
                log.info("coordinator stopped; restarting in %.2f s", down_ms / 1000.0)
                time.sleep(down_ms / 1000.0)
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
            time.sleep(POLL_S)
        exit_by = time.monotonic() + cfg.agents_exit_s
        for p in procs.agents.values():
            try:
                p.wait(max(0.0, exit_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("an agent did not exit after the run finished; stopping it")
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
