"""The step lane, agent side: the step exchange on the coordinator's lane, and the carrier that
joins, steps and leaves on the lane alone.

`LaneExchange` runs one session's step exchange on an open lane (attach to a session joined over
gRPC, or join on the lane itself), on the calling thread with a blocking socket: no hand-off
between a step's arrival, its decision and its reply. Both carriers step through it.

`LaneCarrier` is the `Carrier` of a lane-only agent: Join, steps and Leave on the lane, and no
gRPC in the process (about 15 MiB less resident memory on a small device).

Must not import grpc nor torch.
"""

from __future__ import annotations

import logging
import threading

from ...errors import JoinRefused, WireError
from ...lane import LaneClient
from ...proto.v1 import team_pb2 as pb
from ...security import SecurityConfigError
from .contract import (
    SERVED,
    STOPPED,
    Link,
    SessionHost,
    SessionOutcome,
    failed,
)

log = logging.getLogger(__name__)


class LaneExchange:
    """One carrier's step exchanges on the step lane, one at a time."""

    def __init__(self, host: SessionHost, link: Link) -> None:
        self.host = host
        self.link = link
        self._lane: LaneClient | None = None

    @property
    def lane(self) -> LaneClient | None:
        """The lane of the exchange under way."""
        return self._lane

    def open(self, host: str, port: int) -> LaneClient | SessionOutcome:
        """Dial the step lane; the client, or the failed outcome saying why it is unreachable."""
        link = self.link
        try:
            return LaneClient(
                host,
                port,
                tls=link.tls,
                max_message_bytes=link.max_message_bytes,
                connect_timeout_s=link.join_timeout_s,
            )
        except OSError as e:
            return failed(f"step lane {host}:{port} unreachable ({e})")
        except SecurityConfigError as e:  # the files were checked at start-up: being replaced?
            return failed(f"step lane TLS files unusable now ({e})")

    def serve(self, client: LaneClient, first: pb.AgentMessage) -> SessionOutcome:
        """Send ``first`` (attach to a session joined over gRPC, or join on the lane itself), then
        answer the coordinator until the lane ends. Raises `JoinRefused` when a join on the lane
        is refused."""
        host = self.host
        self._lane = client
        served = False
        try:
            if host.stopping:
                return STOPPED
            client.send(first)
            if first.WhichOneof("kind") == "join":
                client.set_timeout(self.link.join_timeout_s)  # as long as a Join rpc may take
                answer = client.recv()
                client.set_timeout(None)
                if answer is None:
                    return failed("step lane closed before answering the join")
                kind = answer.WhichOneof("kind")
                g = answer.goodbye
                if kind == "goodbye" and g.reason == pb.GOODBYE_REASON_REFUSED:
                    raise JoinRefused(g.status_code, g.detail)
                if kind != "join_reply":
                    raise WireError(f"the coordinator answered a join with {kind}, not join_reply")
                host.accept_join(answer.join_reply)
            while (msg := client.recv()) is not None:
                served = True
                out = host.on_message(msg)
                if isinstance(out, SessionOutcome):
                    return out
                if out is not None:
                    client.send(out)
        except (OSError, WireError) as e:
            if not host.stopping:
                log.warning("step lane broke: %s", e)
        finally:
            self._lane = None
        if host.stopping:
            return STOPPED
        return SERVED if served else failed("step lane ended before any message")


class LaneCarrier:
    """`Carrier` on the coordinator's step lane alone (``--step-lane-address``): no gRPC here."""

    LEAVE_GRACE_S = 1.0
    """How long a Leave may take on `stop` before the lane is cut."""

    def __init__(self, host: SessionHost, link: Link) -> None:
        if link.step_lane_address is None:
            raise ValueError("a lane-only agent needs the step lane's address; found none")
        self.host = host
        self.link = link
        self.exchange = LaneExchange(host, link)

    @property
    def lane(self) -> LaneClient | None:
        return self.exchange.lane

    def session(self) -> SessionOutcome:
        assert self.link.step_lane_address is not None
        client = self.exchange.open(*self.link.step_lane_address)
        if isinstance(client, SessionOutcome):
            return client
        try:
            join = self.host.join_request()
            join.token = self.link.token
            return self.exchange.serve(client, pb.AgentMessage(join=join))
        finally:
            client.close()

    def stop(self) -> None:
        client = self.exchange.lane
        if client is not None:  # else serve sees the stop flag before it sends anything
            threading.Thread(
                target=self._leave_then_cut, args=(client,), daemon=True, name="agent-leave"
            ).start()

    def _leave_then_cut(self, client: LaneClient) -> None:
        """Say leave (the coordinator frees the seat as "left" and closes the lane, which ends
        the session); cut the lane if that has not happened within the grace."""
        cut = threading.Timer(self.LEAVE_GRACE_S, client.interrupt)
        cut.daemon = True
        cut.start()
        leave = pb.AgentMessage(leave=pb.LeaveRequest(reason="agent stopping"))
        try:
            client.send(leave, lock_timeout_s=self.LEAVE_GRACE_S)
        except (OSError, TimeoutError):
            client.interrupt()

    def close(self) -> None:
        pass
