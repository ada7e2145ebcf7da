"""A simulator of the team's world in real time, for evaluating agents that run their own loops.

`qmix-eval --field` does not clock the agents: the world ticks at its own rate and every agent
senses and acts on its own clock through its ordinary field plug-ins, which here talk to this
simulator over UDP on loopback (or through a delaying, lossy proxy, or across network
namespaces) instead of real sensors and motors:

- at each tick the simulator sends every agent its current observation, mask, episode and step;
- an agent's sensor plug-in (`sensor`) returns the latest observation it received, stamped with
  its arrival time (so a dead link becomes a stale sensor and the loop's watchdog holds the
  fallback), and says "episode over" once with the episode's final state (sent after its last
  step; an action decided on it is ignored), then nothing until the next episode's first
  observation;
- its actuator plug-in (`actuator`) sends the action back, tagged with the episode it was decided in;
- at the end of each tick the simulator applies, per agent, the latest action received for this
  episode, or the legal-action rule when there is none (counted), and steps the env.

Episodes start back to back, or, with mission control (``starts``, e.g. `MissionStarts` reading
the coordinator's run record), at the instant mission control announced to the team: the first
observation goes out half a period before it, and the world steps half a period after each agent
tick, so an agent ticking on the agreed instants acts on every observation in time.

Datagrams (little-endian): ``b"QFS1"`` then a type byte. HELLO (1): the agent id in UTF-8.
OBS (2): episode i32, step i32, over u8, obs_dim u16, n_actions u16, float32 obs, u8 mask.
ACT (3): episode i32, step i32, action i32, then the agent id. No torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..field import FieldStep, SensorReading
from ..legal import is_allowed, substitute
from ..mission_records import MissionEvent
from ..records import from_json

log = logging.getLogger(__name__)

MAGIC = b"QFS1"
HELLO, OBS, ACT = 1, 2, 3
_OBS_HEAD = struct.Struct("<4sBiiBHH")
_ACT_HEAD = struct.Struct("<4sBiii")
ADDRESS_ENV = "QMIX_EDGE_FIELD_SIM"
"""Environment variable naming the simulator's ``host:port`` for the plug-ins."""


@dataclass
class FieldEpisode:
    """One simulated episode, as the report shows it."""

    seed: int
    ret: float = 0.0
    steps: int = 0
    substituted: dict[str, int] = field(default_factory=dict)
    """Per agent: steps at which no action for this episode had arrived (the rule applied)."""


class FieldSimulator:
    """The team's world, ticking at ``rate_hz`` (see the module docstring)."""

    def __init__(
        self,
        env: Any,
        agent_ids: Sequence[str],
        fallback_actions: Sequence[int],
        *,
        rate_hz: float,
        seed: int,
        episodes: int,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.env, self.agent_ids = env, tuple(agent_ids)
        self.fallbacks = tuple(int(a) for a in fallback_actions)
        self.period = 1.0 / rate_hz
        self.seed, self.episodes = seed, episodes
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.0)
        self.address = self.sock.getsockname()
        self._peers: dict[str, Any] = {}
        self._latest: dict[str, tuple[int, int]] = {}  # agent -> (episode, action)
        self.results: list[FieldEpisode] = []
        self.stop_event = threading.Event()
        self._progress = threading.Condition()
        self._position = (-1, 0)  # (episode index, steps taken in it)

    def wait_for_step(self, index: int, steps: int, timeout: float) -> bool:
        """Wait until the world has taken ``steps`` steps of episode ``index`` (or a later one)."""
        with self._progress:
            return self._progress.wait_for(lambda: self._position >= (index, steps), timeout)

    def _advance(self, index: int, steps: int) -> None:
        with self._progress:
            self._position = (index, steps)
            self._progress.notify_all()

    def _drain(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) < 5 or data[:4] != MAGIC:
                continue
            kind = data[4]
            if kind == HELLO:
                agent = data[5:].decode("utf-8", "replace")
                if agent in self.agent_ids:
                    self._peers[agent] = addr
            elif kind == ACT and len(data) >= _ACT_HEAD.size:
                _, _, ep, _step, action = _ACT_HEAD.unpack_from(data)
                agent = data[_ACT_HEAD.size :].decode("utf-8", "replace")
                if agent in self.agent_ids:
                    self._peers[agent] = addr
                    self._latest[agent] = (ep, action)

    def _send_obs(self, episode: int, step: int, over: bool, ts: Any) -> None:
        for k, agent in enumerate(self.agent_ids):
            addr = self._peers.get(agent)
            if addr is None:
                continue
            spec = self.env.spec.agents[k]
            obs = np.ascontiguousarray(ts.obs[k, : spec.obs_dim], dtype="<f4")
            mask = np.ascontiguousarray(ts.avail[k, : spec.n_actions], dtype=np.uint8)
            head = _OBS_HEAD.pack(
                MAGIC, OBS, episode, step, int(over), spec.obs_dim, spec.n_actions
            )
            with contextlib.suppress(OSError):  # a lossy world: the agent's sensor goes stale
                self.sock.sendto(head + obs.tobytes() + mask.tobytes(), addr)

    def wait_for_agents(self, timeout_s: float) -> bool:
        """Wait until every agent has said hello (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop_event.is_set():
            self._drain()
            if len(self._peers) == len(self.agent_ids):
                return True
            self.stop_event.wait(0.01)
        return False

    def run(self, starts: Callable[[int], float | None] | None = None) -> list[FieldEpisode]:
        """Play ``episodes`` episodes in real time; returns them. ``starts``: episode index ->
        its start instant on ``time.monotonic()`` once known (None: not announced yet), to start
        each world episode when mission control starts the team's."""
        limit = self.env.spec.episode_limit
        next_t = time.monotonic()
        for e in range(self.episodes):
            episode_id = e + 1
            if starts is not None:
                at = self._wait_for_start(starts, e)
                if at is None:
                    return self.results
                next_t = at - self.period / 2
            ep = FieldEpisode(self.seed + e, substituted=dict.fromkeys(self.agent_ids, 0))
            ts = self.env.reset(seed=self.seed + e)
            for step in range(limit):
                self._send_obs(episode_id, step, False, ts)
                next_t += self.period
                self.stop_event.wait(max(0.0, next_t - time.monotonic()))
                if self.stop_event.is_set():
                    return self.results
                self._drain()
                actions = np.zeros(len(self.agent_ids), dtype=np.int64)  # (n_agents,)
                for k, agent in enumerate(self.agent_ids):
                    spec = self.env.spec.agents[k]
                    mask = np.asarray(ts.avail[k, : spec.n_actions], dtype=bool)
                    got = self._latest.get(agent)
                    if (
                        got is not None
                        and got[0] == episode_id
                        and is_allowed(got[1], spec.n_actions, mask)
                    ):
                        actions[k] = got[1]
                    else:
                        actions[k] = substitute(self.fallbacks[k], spec.n_actions, mask)
                        if ts.alive[k]:
                            ep.substituted[agent] += 1
                result = self.env.step(actions)
                ep.ret += float(result.reward)
                ep.steps += 1
                self._advance(e, ep.steps)
                ts = result.next
                if result.done:
                    break
            self._send_obs(episode_id, ep.steps, True, ts)  # the final state: the episode is over
            next_t += self.period  # shown for one tick, so every agent sees the episode end
            self.stop_event.wait(max(0.0, next_t - time.monotonic()))
            self.results.append(ep)
            log.info("field episode %d (seed %d): return %.3f", episode_id, ep.seed, ep.ret)
        return self.results

    def _wait_for_start(self, starts: Callable[[int], float | None], index: int) -> float | None:
        while not self.stop_event.is_set():
            self._drain()  # keep learning the agents' addresses meanwhile
            at = starts(index)
            if at is not None:
                return at
            self.stop_event.wait(0.01)
        return None

    def close(self) -> None:
        self.sock.close()


class MissionStarts:
    """Episode start instants read from a mission's run record as the coordinator appends them
    (``mission`` start lines; a restarted coordinator's lines count too): ``starts(index)`` is
    episode ``index``'s start on this host's ``time.monotonic()`` (converted from the line's Unix
    time: the simulator and mission control share a host clock), or None until announced."""

    def __init__(self, record: str | os.PathLike[str]) -> None:
        self.path = record
        self._offset = 0
        self._starts: dict[int, float] = {}

    def __call__(self, index: int) -> float | None:
        if index not in self._starts:
            self._read()
        unix = self._starts.get(index)
        return None if unix is None else time.monotonic() + (unix - time.time())

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("type") != MissionEvent.TYPE:
                continue
            event = from_json(obj)
            if isinstance(event, MissionEvent) and event.kind == "start":
                self._starts[event.episode_index] = event.time


class SimLink:
    """An agent's side of the simulator: its sensor and actuator plug-ins (one per process)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0" if address[0] != "127.0.0.1" else "127.0.0.1", 0))
        self.sock.settimeout(0.0)
        self.latest: tuple[int, int, bool, np.ndarray, np.ndarray, float] | None = None
        self._hello_sent: set[str] = set()
        self._ended: int | None = None  # the world episode whose end this sensor reported

    def _hello(self, agent_id: str) -> None:
        self.sock.sendto(MAGIC + bytes([HELLO]) + agent_id.encode(), self.address)
        self._hello_sent.add(agent_id)

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) < _OBS_HEAD.size or data[:4] != MAGIC or data[4] != OBS:
                continue
            _, _, ep, step, over, obs_dim, n_actions = _OBS_HEAD.unpack_from(data)
            at = _OBS_HEAD.size
            obs = np.frombuffer(data, dtype="<f4", count=obs_dim, offset=at).astype(np.float32)
            mask = np.frombuffer(data, dtype=np.uint8, count=n_actions, offset=at + 4 * obs_dim)
            self.latest = (ep, step, bool(over), obs, mask.astype(bool), time.monotonic())

    def sensor(self, ctx: FieldStep) -> SensorReading:
        if ctx.agent_id not in self._hello_sent or self.latest is None:
            self._hello(ctx.agent_id)
        self._drain()
        if self.latest is None:
            raise ConnectionError(f"no observation from the simulator at {self.address} yet")
        ep, _, over, obs, mask, at = self.latest
        if ep == self._ended:  # its end was reported: nothing to decide until the next episode
            raise ConnectionError(f"world episode {ep} is over; waiting for the next one")
        if over:
            self._ended = ep
        return SensorReading(obs=obs, mask=mask, time=at, episode_over=over)

    def actuator(self, ctx: FieldStep, action: int) -> None:
        ep = self.latest[0] if self.latest is not None else 0
        step = self.latest[1] if self.latest is not None else 0
        with contextlib.suppress(OSError):
            self.sock.sendto(
                _ACT_HEAD.pack(MAGIC, ACT, ep, step, int(action)) + ctx.agent_id.encode(),
                self.address,
            )


_LINK: SimLink | None = None


def _link() -> SimLink:
    global _LINK
    if _LINK is None:
        host, _, port = os.environ[ADDRESS_ENV].rpartition(":")
        _LINK = SimLink((host, int(port)))
    return _LINK


def sensor(ctx: FieldStep) -> SensorReading:
    """``--sensor qmix_edge.runtime.eval.field_sim:sensor`` (simulator at $QMIX_EDGE_FIELD_SIM)."""
    return _link().sensor(ctx)


def actuator(ctx: FieldStep, action: int) -> None:
    """``--actuator qmix_edge.runtime.eval.field_sim:actuator``."""
    _link().actuator(ctx, action)
