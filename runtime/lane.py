"""The step lane: the step exchange of protocol qmix_edge.v1 without HTTP/2.

The Steps stream's own conversation (Attach, then StepRequest / StepReply, EpisodeStart,
EpisodeEnd, Goodbye) carried over one TCP connection, TLS-wrapped with the coordinator's
certificates when it serves TLS, as length-prefixed protobuf frames (the framing is specified in
protos/qmix_edge/runtime/proto/v1/team.proto), because Python's gRPC spends most of a team
step's CPU on those messages (bench/runtime_transport.py measures both carriers). An agent may
also Join and Leave on the lane itself (join / join_reply / leave frames, the Join rpc's checks
and status codes) and then needs no gRPC at all; health stays on gRPC.

Owns the framing (`encode_frame`, `FrameDecoder`) and the agent's end (`LaneClient`: a
blocking socket, so receiving a step, deciding and replying happen on one thread with no event
loop in between). Loads no grpc, and ssl only for a TLS lane (the contexts of both ends are
`ServerTls.ssl_context` / `ClientTls.ssl_context`). The coordinator's end is
`qmix_edge.runtime.coordinator.lane_server`; who a lane's certificate names is
`qmix_edge.runtime.security.peercert_agent_id`, the same rule as on gRPC.

Must not import torch (nor qmix_edge.train / qmix_edge.export).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Final

from .errors import WireError
from .proto.v1 import team_pb2 as pb
from .security import ClientTls

FRAME_HEADER: Final = struct.Struct("<I")
"""A frame is this 4-byte little-endian length, then that many bytes of one message."""
ATTACH_TIMEOUT_S: Final = 5.0
"""A lane connection that has not attached after this long is closed by the coordinator."""
# TCP keepalive on the agent's end: a coordinator host that vanished without closing the
# connection (power loss, a cut link) is noticed after about IDLE + INTERVAL * COUNT seconds.
KEEPALIVE_IDLE_S: Final = 10
KEEPALIVE_INTERVAL_S: Final = 3
KEEPALIVE_COUNT: Final = 3


_unpack_header: Final = FRAME_HEADER.unpack_from
# upb parses any buffer (the stubs say bytes): the receive buffer's view needs no copy first.
_parse_coordinator_message: Final[Callable[[memoryview], pb.CoordinatorMessage]] = (
    pb.CoordinatorMessage.FromString  # type: ignore[assignment]
)


class FrameError(WireError):
    """A lane frame is longer than the receive limit, or the connection ended inside a frame."""


def encode_frame(msg: Any) -> bytes:
    """One message as a lane frame (length header + serialized bytes)."""
    body = msg.SerializeToString()
    return FRAME_HEADER.pack(len(body)) + body


class FrameDecoder:
    """Cuts a byte stream into frame bodies; refuses a frame over ``max_bytes`` before buffering it.

    Bytes land in one preallocated buffer (`buffer` / `consumed`, what asyncio's BufferedProtocol
    wants): a plain Protocol would receive each read as a fresh 256 KiB bytes object, an mmap and
    munmap per read that cost the coordinator a third of its step time. `feed` copies bytes in.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Room for one whole largest frame however the unread rest lies (see `buffer`).
        self._buf = bytearray(2 * (max_bytes + FRAME_HEADER.size))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet cut into a frame
        self._end = 0  # end of the received bytes

    def buffer(self) -> memoryview:
        """Free space for the next received bytes (never empty)."""
        self._start, self._end = _make_room(self._buf, self._start, self._end, self.max_bytes)
        return self._view[self._end :]

    def consumed(self, n: int) -> list[bytes]:
        """``n`` bytes were written into `buffer`; return the complete frame bodies now available.

        Raises `FrameError` when a frame announces more than ``max_bytes``."""
        self._end += n
        out: list[bytes] = []
        pos, end, view = self._start, self._end, self._view
        header = FRAME_HEADER.size
        while end - pos >= header:
            (size,) = FRAME_HEADER.unpack_from(view, pos)
            if size > self.max_bytes:
                raise FrameError(
                    f"a step lane frame of {size} bytes exceeds the limit of {self.max_bytes} bytes"
                )
            if end - pos - header < size:
                break
            out.append(bytes(view[pos + header : pos + header + size]))
            pos += header + size
        self._start = pos
        return out

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes (copied in); return the complete frame bodies now available."""
        out: list[bytes] = []
        data_view = memoryview(data)
        while data_view:
            room = self.buffer()
            k = min(len(room), len(data_view))
            room[:k] = data_view[:k]
            out += self.consumed(k)
            data_view = data_view[k:]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not complete a frame yet."""
        return self._end - self._start


def _make_room(buf: bytearray, start: int, end: int, max_body: int) -> tuple[int, int]:
    """Room for one more largest frame after the unread bytes ``buf[start:end]`` (less than one
    frame): they move to the front when the tail is too short. Returns the new (start, end)."""
    if start == end:
        return 0, 0
    if len(buf) - end <= max_body + FRAME_HEADER.size:
        n = end - start
        buf[:n] = buf[start:end]
        return 0, n
    return start, end


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); ValueError naming the expected form."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"expected a step lane address HOST:PORT (port 1-65535, IPv6 as [ADDR]:PORT); "
            f"found {address!r}"
        )
    return host, int(port)


# ------------------------------------------------------------------------------ the agent's end
class LaneClient:
    """The agent's end of a step lane: one blocking socket, one frame at a time.

    `recv` blocks until a whole message arrived (None when the coordinator closed the lane);
    `interrupt` may be called from any thread to make a blocked `recv` return None. `send` may
    be called from several threads (the replying one, and one saying leave)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ClientTls | None = None,
        max_message_bytes: int,
        connect_timeout_s: float = 5.0,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=connect_timeout_s)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in (
                ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            ):
                if hasattr(socket, name):  # Linux; elsewhere the system defaults apply
                    raw.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
            sock: socket.socket = raw
            if tls is not None:
                # ssl is loaded only here (ClientTls.ssl_context): a plain-text lane agent never
                # loads it, nor libssl (about 1.2 MiB less resident memory per agent).
                sock = tls.ssl_context().wrap_socket(raw, server_hostname=tls.server_name or host)
            sock.settimeout(None)  # connected: block until the coordinator speaks
        except BaseException:
            raw.close()
            raise
        self._sock = sock
        self.max_message_bytes = max_message_bytes
        # Received bytes land here straight from the socket (recv_into): one system call per
        # message in the usual case, and no Python-level file object in between. Room for a
        # whole largest frame however the unread rest lies (see `_fill`).
        self._buf = bytearray(max(8192, 2 * (max_message_bytes + FRAME_HEADER.size)))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet returned as a message
        self._end = 0  # end of the received bytes
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # one frame at a time, whole
        self._closed = False

    def send(self, msg: pb.AgentMessage, *, lock_timeout_s: float = -1) -> None:
        """Send one message (raises OSError when the lane is broken). ``lock_timeout_s``: how
        long to wait for another thread's send to finish (TimeoutError after it; -1: forever)."""
        frame = encode_frame(msg)
        if not self._send_lock.acquire(timeout=lock_timeout_s):
            raise TimeoutError("the step lane is busy sending")
        try:
            self._sock.sendall(frame)
        finally:
            self._send_lock.release()

    def send_bytes(self, data: bytes) -> None:
        """Send bytes as they are, unframed: for tools and tests that speak the lane's framing
        themselves (a coordinator must survive whatever arrives)."""
        with self._send_lock:
            self._sock.sendall(data)

    def set_timeout(self, seconds: float | None) -> None:
        """Make `recv` raise TimeoutError (an OSError) after ``seconds`` of silence; None: block."""
        self._sock.settimeout(seconds)

    def recv(self) -> pb.CoordinatorMessage | None:
        """The next message, or None when the lane was closed (by either end).

        Raises `FrameError` for an oversized or truncated frame and `WireError` for bytes that are
        not a CoordinatorMessage."""
        header = FRAME_HEADER.size
        try:
            while True:
                start = self._start
                have = self._end - start
                if have >= header:
                    (n,) = _unpack_header(self._buf, start)
                    if n > self.max_message_bytes:
                        raise FrameError(
                            f"the coordinator sent a {n}-byte frame; the limit is "
                            f"{self.max_message_bytes} bytes"
                        )
                    if have - header >= n:
                        self._start = start + header + n
                        body = self._view[start + header : self._start]
                        break
                if not self._fill():
                    if self._closed:  # interrupted on purpose
                        return None
                    if have == 0:
                        return None
                    if have < header:
                        raise FrameError("the step lane closed inside a frame header")
                    raise FrameError(f"the step lane closed inside a {n}-byte frame")
        except (OSError, ValueError):
            if self._closed:  # interrupted on purpose
                return None
            raise
        try:
            # Parsing copies what it keeps: the buffer may be overwritten by the next `recv`.
            return _parse_coordinator_message(body)
        except Exception as e:
            raise WireError(f"the coordinator sent a frame that is not a message ({e})") from e

    def _fill(self) -> bool:
        """Receive more bytes after the unread rest (one blocking recv); False at end of stream."""
        self._start, self._end = _make_room(
            self._buf, self._start, self._end, self.max_message_bytes
        )
        k = self._sock.recv_into(self._view[self._end :])
        self._end += k
        return k > 0

    def interrupt(self) -> None:
        """Unblock a `recv` in another thread (it returns None) and end the lane."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop its SSL
        # object under the reading thread's feet; this only makes that thread's read fail.
        with contextlib.suppress(OSError):  # already gone
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self.interrupt()
        self._sock.close()
