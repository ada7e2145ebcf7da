"""Agents as separate hosts: `qmix-eval --netns` runs the coordinator and every agent in its own
network namespace (veth links, a private /30 each, tc tbf shaping) and still keeps exact parity;
the namespaces are always deleted, also when setup fails half way. Skips with the reason where
namespaces are not permitted (not root, no `ip`, operation not permitted). Traffic goes only to
addresses inside the namespaces these tests create.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trust_certs import SERVER_NAME, make_certs

from qmix_edge.runtime import netns
from qmix_edge.runtime.eval import main as eval_main
from qmix_edge.runtime.netns import NetnsError, NetnsTopology, netns_unavailable

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def netns_ok() -> None:
    why = netns_unavailable()
    if why is not None:
        pytest.skip(why)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.slow
def test_eval_with_each_agent_in_its_own_namespace_keeps_parity(
    netns_ok: None, two_step_artifacts: Path, tmp_path: Path
) -> None:
    before = namespaces()
    code = eval_main(
        [
            "--artifacts",
            str(two_step_artifacts),
            "--episodes",
            "3",
            "--seed",
            "5",
            "--report",
            str(tmp_path / "r.json"),
            "--workdir",
            str(tmp_path / "work"),
            "--step-deadline-ms",
            "10000",
            "--netns",
            "--netns-rate",
            "10mbit",
        ]
    )
    assert code == 0, (tmp_path / "work" / "coordinator.log").read_text()[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parity"]["all_equal"] and report["totals"]["fallbacks"] == 0
    topo = report["process"]["netns"]
    assert topo["shaped"] is True and topo["rate"] == "10mbit"
    ips = [ip for _, ip in topo["agents"].values()]
    assert len(set(ips)) == 2 and all(ip.startswith("10.213.") for ip in ips)
    # the agents really dialled from their namespaces: the coordinator saw their addresses
    peers = {
        json.loads(line)["peer"]
        for line in (tmp_path / "work" / "episodes.jsonl").read_text().splitlines()
        if '"type":"join"' in line
    }
    assert {p.split(":")[1] for p in peers} == set(ips)
    assert namespaces() == before  # torn down


LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "while True: s.accept()[0].close()\n"
)
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"


def test_links_connect_only_their_own_namespaces(netns_ok: None) -> None:
    with NetnsTopology(["agent_0", "agent_1"]) as t:
        a0, a1 = t.links
        server = subprocess.Popen(
            [*t.exec_prefix(t.coordinator_ns), sys.executable, "-c", LISTEN],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = server.stdout.readline().strip()

            def connect(ns: str, ip: str) -> int:
                cmd = [*t.exec_prefix(ns), sys.executable, "-c", CONNECT, ip, port]
                return subprocess.run(cmd, capture_output=True, check=False).returncode

            assert connect(a0.namespace, a0.coordinator_ip) == 0
            assert connect(a1.namespace, a1.coordinator_ip) == 0
            # agent_0 has no route to agent_1's link, nor to the root namespace's loopback
            assert connect(a0.namespace, a1.coordinator_ip) != 0
            assert connect(a0.namespace, "127.0.0.1") != 0
        finally:
            server.kill()
            server.wait(10)
        made = {t.coordinator_ns, a0.namespace, a1.namespace}
        assert made <= namespaces()
    assert not made & namespaces()


def test_setup_failing_half_way_tears_everything_down(
    netns_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = netns._run
    calls = {"n": 0}

    def flaky(cmd: list[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 8:  # after the namespaces exist, while wiring the links
            raise NetnsError("injected failure")
        real(cmd)

    monkeypatch.setattr(netns, "_run", flaky)
    t = NetnsTopology(["agent_0", "agent_1"])
    made = {t.coordinator_ns, *(x.namespace for x in t.links)}
    with pytest.raises(NetnsError, match="injected"):
        t.setup()
    assert not made & namespaces()


def test_unprivileged_gets_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = netns_unavailable()
    assert why is not None and "need root" in why


def test_eval_refuses_netns_where_not_permitted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, two_step_artifacts: Path, caplog: Any
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    argv = ["--artifacts", str(two_step_artifacts), "--report", str(tmp_path / "r.json")]
    assert eval_main([*argv, "--netns"]) == 2
    assert "--netns: network namespaces need root" in caplog.text


@pytest.mark.slow
def test_eval_in_namespaces_over_mutual_tls_with_tokens(
    netns_ok: None, two_step_artifacts: Path, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "pki", {"agent_0": "agent_0", "agent_1": "agent_1"})
    d = certs["dir"]
    code = eval_main(
        [
            "--artifacts", str(two_step_artifacts), "--episodes", "2", "--seed", "1",
            "--report", str(tmp_path / "r.json"), "--workdir", str(tmp_path / "work"),
            "--step-deadline-ms", "10000", "--netns",
            "--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / "coordinator.pem"),
            "--tls-key", str(d / "coordinator.key"), "--tls-agent-certs", str(certs["agents"]),
            "--tls-server-name", SERVER_NAME, "--tokens", str(certs["tokens"]),
        ]
    )  # fmt: skip
    assert code == 0, (tmp_path / "work" / "coordinator.log").read_text()[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parity"]["all_equal"] and report["process"]["netns"] is not None
    cmd_log = (tmp_path / "work" / "agent_0.log").read_text()
    assert "joined team" in cmd_log
