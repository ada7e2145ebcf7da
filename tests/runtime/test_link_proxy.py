"""The delaying, lossy UDP link of `qmix-eval --field`: each device keeps its own address towards
the world, datagrams are held at least the delay, and losses follow the seeded rate."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmix_edge.runtime.eval.config import EvalConfig
from qmix_edge.runtime.eval.faults import read_fault_plan
from qmix_edge.runtime.eval.link_proxy import LinkShape, UdpLinkProxy


@pytest.fixture
def echo() -> Iterator[socket.socket]:
    """A world that answers every datagram with the sender's address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


DROP = '[{"kind": "drop", "agent": "a", "fraction": 0.1}]'


def client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def bounce(world: socket.socket) -> tuple[str, int]:
    data, addr = world.recvfrom(100)
    world.sendto(data + b"|" + str(addr[1]).encode(), addr)
    return addr


def test_each_device_keeps_its_own_address_and_gets_its_own_answers(echo: socket.socket) -> None:
    proxy = UdpLinkProxy(echo.getsockname(), LinkShape()).start()
    a, b = client(), client()
    try:
        a.sendto(b"a", proxy.address)
        seen_a = bounce(echo)
        b.sendto(b"b", proxy.address)
        seen_b = bounce(echo)
        assert seen_a != seen_b  # the world tells the two devices apart
        assert a.recv(100) == b"a|" + str(seen_a[1]).encode()
        assert b.recv(100) == b"b|" + str(seen_b[1]).encode()
    finally:
        proxy.close()
        a.close()
        b.close()


def test_a_datagram_is_held_for_the_delay_and_losses_are_counted(echo: socket.socket) -> None:
    proxy = UdpLinkProxy(echo.getsockname(), LinkShape(delay_s=0.05)).start()
    a = client()
    try:
        sent = time.monotonic()
        a.sendto(b"x", proxy.address)
        bounce(echo)
        a.recv(100)
        assert time.monotonic() - sent >= 0.1  # 50 ms each way, never early
    finally:
        proxy.close()
        a.close()
    lossy = UdpLinkProxy(echo.getsockname(), LinkShape(loss=0.5, seed=1)).start()
    a = client()
    try:
        for i in range(200):
            a.sendto(str(i).encode(), lossy.address)
        got = 0
        echo.settimeout(0.5)
        while True:
            try:
                echo.recvfrom(100)
                got += 1
            except TimeoutError:
                break
        assert 0 < got < 200
        assert lossy.counts.dropped == 200 - got
    finally:
        lossy.close()
        a.close()


def test_a_link_shape_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="loss in"):
        LinkShape(loss=1.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"faults": read_fault_plan(DROP)}, "does not take --faults"),
        ({"episodes": 1}, "needs --episodes >= 2"),
        ({"field_loss": 1.5}, "--field-loss in"),
    ],
)
def test_field_evaluation_flags_are_checked(kw: dict[str, Any], match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        EvalConfig(artifacts=tmp_path, report=tmp_path / "r.json", field=True, **kw)


def test_unknown_field_scenarios_are_named() -> None:
    from qmix_edge.runtime.eval.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["--artifacts", "a", "--report", "r", "--field-scenarios", "own_clocks,bogus"]
        )
