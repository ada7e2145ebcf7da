"""A delaying, lossy UDP proxy: the radio link between each simulated device and its sensors and
motors, for ``qmix-eval --field`` (``tc netem`` is not available to every user, and a proxy needs
no root).

Each client (an agent's sensor and actuator socket) gets its own upstream socket towards the
target (the field simulator), so the target still tells the agents apart by address, as it would
without the proxy. Every datagram, in either direction, is dropped with probability ``loss`` or
else delivered ``delay`` (+ uniform ``jitter``) later; a datagram may overtake another when the
jitter says so, as on a real link. Loss and jitter draw from one seeded generator. No torch.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkShape:
    """How the link behaves (both directions alike)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.jitter_s < 0 or not 0 <= self.loss < 1:
            raise ValueError(
                "a link needs delay >= 0, jitter >= 0 and loss in [0, 1); found "
                f"{self.delay_s}, {self.jitter_s}, {self.loss}"
            )


@dataclass
class LinkCounts:
    """What went through the proxy."""

    forwarded: int = 0
    dropped: int = 0


class UdpLinkProxy:
    """Listens on ``listen`` (host, port 0 = any) and forwards to ``target`` (see the module
    docstring). `start` runs it in a background thread; `close` stops it."""

    def __init__(
        self, target: tuple[str, int], shape: LinkShape, listen: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.target, self.shape = target, shape
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(listen)
        self.front.setblocking(False)
        self.address: tuple[str, int] = self.front.getsockname()
        self.counts = LinkCounts()
        self._rng = np.random.default_rng(shape.seed)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.front, selectors.EVENT_READ, None)
        self._upstream: dict[tuple[str, int], socket.socket] = {}  # client -> its socket
        self._queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self._order = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-link-proxy")

    def start(self) -> UdpLinkProxy:
        self._thread.start()
        return self

    def _schedule(self, via: socket.socket, data: bytes, to: tuple[str, int]) -> None:
        s = self.shape
        if s.loss and self._rng.random() < s.loss:
            self.counts.dropped += 1
            return
        due = time.monotonic() + s.delay_s + (self._rng.random() * s.jitter_s if s.jitter_s else 0)
        heapq.heappush(self._queue, (due, next(self._order), via, data, to))

    def _read(self, sock: socket.socket, client: tuple[str, int] | None) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if client is None:  # from a device: towards the target, on the device's own socket
                up = self._upstream.get(addr)
                if up is None:
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind((self.address[0], 0))
                    up.setblocking(False)
                    self._upstream[addr] = up
                    self._selector.register(up, selectors.EVENT_READ, addr)
                self._schedule(up, data, self.target)
            else:  # from the target: back to the device this socket serves
                self._schedule(self.front, data, client)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, via, data, to = heapq.heappop(self._queue)
                with contextlib.suppress(OSError):
                    via.sendto(data, to)
                    self.counts.forwarded += 1
            timeout = min(0.05, self._queue[0][0] - now) if self._queue else 0.05
            for key, _ in self._selector.select(max(0.0, timeout)):
                self._read(key.fileobj, key.data)  # type: ignore[arg-type]

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for sock in [self.front, *self._upstream.values()]:
            sock.close()
        self._selector.close()
