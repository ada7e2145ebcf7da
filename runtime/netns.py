"""Agents as separate hosts on one machine: Linux network namespaces for `qmix-eval --netns`.

Owns the topology and its life: one namespace for the coordinator and one per agent, a veth pair
from the coordinator's namespace to each agent's, and a private /30 per agent (the coordinator end
``.1``, the agent end ``.2``). These addresses exist only inside the namespaces made here, so no
traffic leaves them; the root namespace and its interfaces are untouched. Optionally each link is
shaped with a token bucket (``tc qdisc ... tbf``) in both directions, where the kernel allows.

`NetnsTopology` is a context manager: teardown (deleting the namespaces, which deletes their veth
ends) always runs, also when setup fails half way. `netns_unavailable()` says why namespaces
cannot be used here (not root, no ``ip``, operation not permitted), so callers skip clearly.

Uses the ``ip`` and ``tc`` commands (iproute2). No torch here.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from types import TracebackType

from .errors import RuntimeFailure

log = logging.getLogger(__name__)

SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
"""Where the per-agent /30 links are carved from (only inside the namespaces made here)."""
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit)$")


class NetnsError(RuntimeFailure):
    """Network namespaces could not be set up (or are not permitted here)."""


def _ip_bin() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None
    )


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
    except subprocess.CalledProcessError as e:
        raise NetnsError(f"`{' '.join(cmd)}` failed: {e.stderr.strip() or e}") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"`{' '.join(cmd)}` could not run: {e}") from e


def netns_unavailable() -> str | None:
    """None when namespaces can be made here, else why not (for a clear skip or error)."""
    if not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN); run as root or drop --netns"
    ip = _ip_bin()
    if ip is None:
        return "the `ip` command (iproute2) is missing; install iproute2 or drop --netns"
    probe = f"qeprobe{os.getpid()}"
    try:
        _run([ip, "netns", "add", probe])
    except NetnsError as e:
        return f"cannot create a network namespace here ({e}); operation not permitted?"
    try:
        _run([ip, "netns", "del", probe])
    except NetnsError as e:
        log.warning("could not delete the probe namespace %s: %s", probe, e)
    return None


def tc_available() -> bool:
    return shutil.which("tc") is not None or os.access("/usr/sbin/tc", os.X_OK)


@dataclass(frozen=True)
class AgentLink:
    """One agent's host: its namespace and its /30 link to the coordinator's namespace."""

    agent_id: str
    """The agent."""
    namespace: str
    """The agent's namespace."""
    coordinator_ip: str
    """The coordinator's address on this link (``.1``): what the agent dials."""
    agent_ip: str
    """The agent's address (``.2``)."""
    coordinator_if: str
    """The veth end in the coordinator's namespace."""
    agent_if: str
    """The veth end in the agent's namespace."""


class NetnsTopology:
    """A coordinator namespace and one namespace per agent, linked by veth pairs.

    ``rate``: optional tc rate (e.g. ``"10mbit"``) applied with ``tbf`` on both ends of every link;
    if tc refuses (kernel without sch_tbf), the links stay unshaped and `shaped` is False."""

    def __init__(self, agent_ids: list[str], *, rate: str | None = None) -> None:
        if rate is not None and not _RATE.match(rate):
            raise ValueError(f"rate must look like 10mbit / 512kbit / 1gbit; found {rate!r}")
        if len(agent_ids) > SUBNET.num_addresses // 4:
            raise ValueError(f"at most {SUBNET.num_addresses // 4} agents; found {len(agent_ids)}")
        ip = _ip_bin()
        if ip is None:
            raise NetnsError("the `ip` command (iproute2) is missing")
        self._ip = ip
        self.rate = rate
        self.shaped = False
        tag = f"qe{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
        self.coordinator_ns = f"{tag}c"
        subnets = SUBNET.subnets(new_prefix=30)
        self.links: list[AgentLink] = []
        for k, a in enumerate(agent_ids):
            net = next(subnets)
            host, agent = list(net.hosts())  # a /30 has exactly two
            self.links.append(AgentLink(a, f"{tag}a{k}", str(host), str(agent), f"c{k}", f"a{k}"))
        self._made: list[str] = []

    def link(self, agent_id: str) -> AgentLink:
        return next(x for x in self.links if x.agent_id == agent_id)

    def exec_prefix(self, namespace: str) -> list[str]:
        """Prefix a command with this to run it inside ``namespace``."""
        return [self._ip, "netns", "exec", namespace]

    def setup(self) -> NetnsTopology:
        ip = self._ip
        try:
            for ns in [self.coordinator_ns, *(x.namespace for x in self.links)]:
                _run([ip, "netns", "add", ns])
                self._made.append(ns)
                _run([ip, "-n", ns, "link", "set", "lo", "up"])
            c = self.coordinator_ns
            for x in self.links:
                veth = ["type", "veth", "peer", "name", x.agent_if, "netns", x.namespace]
                _run([ip, "-n", c, "link", "add", x.coordinator_if, *veth])
                _run(
                    [ip, "-n", c, "addr", "add", f"{x.coordinator_ip}/30", "dev", x.coordinator_if]
                )
                _run([ip, "-n", x.namespace, "addr", "add", f"{x.agent_ip}/30", "dev", x.agent_if])
                _run([ip, "-n", c, "link", "set", x.coordinator_if, "up"])
                _run([ip, "-n", x.namespace, "link", "set", x.agent_if, "up"])
            if self.rate:
                self.shaped = self._shape(self.rate)
        except BaseException:
            self.teardown()
            raise
        log.info(
            "network namespaces up: coordinator %s, agents %s%s",
            self.coordinator_ns,
            [(x.agent_id, x.namespace, x.agent_ip) for x in self.links],
            f", links shaped to {self.rate}" if self.shaped else "",
        )
        return self

    def _shape(self, rate: str) -> bool:
        tc = shutil.which("tc") or "/usr/sbin/tc"
        try:
            for x in self.links:
                for ns, dev in ((self.coordinator_ns, x.coordinator_if), (x.namespace, x.agent_if)):
                    tbf = ["tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"]
                    _run([*self.exec_prefix(ns), tc, "qdisc", "add", "dev", dev, "root", *tbf])
        except NetnsError as e:
            log.warning("links left unshaped: tc tbf is not available here (%s)", e)
            return False
        return True

    def teardown(self) -> None:
        """Delete every namespace made here (their veth ends go with them). Never raises."""
        for ns in reversed(self._made):
            try:
                _run([self._ip, "netns", "del", ns])
            except NetnsError as e:
                log.warning("could not delete namespace %s: %s", ns, e)
        self._made.clear()

    def __enter__(self) -> NetnsTopology:
        return self.setup()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()
