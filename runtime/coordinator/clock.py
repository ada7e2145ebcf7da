"""The step clock: runs the episodes, one team step at a time, fed by a `StepSource`.

Each step sends every attached agent its StepRequest, collects replies in a `StepWindow`
(`qmix_edge.runtime.coordinator.replies`: where a reply is accepted or discarded) until all have
answered or the step deadline passed, fills every missing or invalid reply with the one
legal-action rule (`qmix_edge.runtime.legal`), applies the actions through the source and records
the step. An agent that misses ``lease_steps`` consecutive steps is declared dead and the team
policy decides. The carriers cannot be told apart here.

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from .. import wire
from ..legal import substitute
from ..proto.v1 import team_pb2 as pb
from .config import CoordinatorConfig
from .record import Recorder
from .replies import StepWindow
from .sessions import Session, Sessions
from .sources import StepSource
from .summary import AgentCounters, RunSummary
from .team import AgentSlot, TeamSpec

log = logging.getLogger(__name__)

_WIRE_F32 = np.dtype("<f4")  # observations travel as little-endian float32
# A protobuf (upb) message keeps every bytes value ever set on it in its arena until the message
# itself is freed: a seat's reused StepRequest grows by its observation and mask bytes each step
# (80 B for simple_spread). It is rebuilt after this many team steps, which bounds that arena.
_STEP_MESSAGE_REUSE = 1024
ENV_ERROR_LIMIT = 3
"""Consecutive episodes ended by an environment error after which the run stops as failed."""


class StepClock:
    """Runs the team's episodes on the coordinator's event loop."""

    def __init__(
        self,
        team: TeamSpec,
        config: CoordinatorConfig,
        sessions: Sessions,
        source: StepSource,
        recorder: Recorder,
        *,
        episode_limit: int,
        start_index: int,
        team_step: int,
        stop_event: asyncio.Event,
        stop: Callable[[], Awaitable[None]],
        on_step: Callable[[], None],
    ) -> None:
        """``stop``: begin the coordinator's graceful stop (``--stop-after-steps``); ``on_step``:
        called after every team step."""
        self.team = team
        self.config = config
        self.sessions = sessions
        self.source = source
        self.recorder = recorder
        self.episode_limit = episode_limit
        self.start_index = start_index
        self.team_step = team_step
        """Team steps of the whole run so far (a resumed run counts its earlier processes')."""
        self.counters: dict[str, AgentCounters] = sessions.counters
        self._stop_event = stop_event
        self._stop = stop
        self._on_step = on_step
        self._window: StepWindow | None = None
        self._t0 = time.perf_counter()
        sessions.on_end(self._session_ended)

    # ------------------------------------------------------------------------- replies
    def accept(self, s: Session, reply: pb.StepReply) -> None:
        """Take one StepReply from a carrier: the step in flight's window accepts or discards it
        (`StepWindow.accept`); with no step in flight it is late."""
        w = self._window
        if w is None:
            self.counters[s.agent_id].late_replies += 1
            log.debug(
                "discarded reply of %s for episode %d step %d (no step in flight)",
                s.agent_id,
                reply.episode_id,
                reply.step,
            )
            return
        w.accept(s, reply, self.team.agents[s.agent_index].n_actions, self.counters)

    def _session_ended(self, s: Session) -> None:
        if self._window is not None:
            self._window.drop(s.agent_index)

    # --------------------------------------------------------------------------- the run
    async def run(self) -> RunSummary:
        """Run the configured episodes (or until the stop event); end every session."""
        episodes: list[dict[str, Any]] = []
        index = self.start_index
        last = self.config.episodes if self.config.episodes > 0 else math.inf
        env_errors = 0  # consecutive episodes ended by the environment raising
        failure: str | None = None
        stop = self._stop_event
        while index < last and not stop.is_set():
            await self._wait_for_team()
            if stop.is_set():
                break
            ep = await self._run_episode(index)
            episodes.append(ep)
            if ep["reason"] == "stopped":
                break
            index += 1
            env_errors = env_errors + 1 if ep["reason"] == "env_error" else 0
            if env_errors >= ENV_ERROR_LIMIT:
                failure = (
                    f"the environment failed in {env_errors} consecutive episodes (the last: "
                    f"{ep['error']}); fix the environment or its kwargs and run again"
                )
                log.error("stopping the run: %s", failure)
                break
        finished = index >= last
        if finished or failure is not None:  # either way the run is over: agents may exit
            reason = pb.GOODBYE_REASON_RUN_FINISHED
            detail = "run finished" if failure is None else "run ended: the environment failed"
        else:
            reason, detail = pb.GOODBYE_REASON_SHUTDOWN, "coordinator stopping"
        ran = any(e["steps"] > 0 or e["reason"] == "env_error" for e in episodes)
        never_joined = tuple(
            a.agent_id
            for i, a in enumerate(self.team.agents)
            if ran and not self.sessions.ever_joined(i)
        )
        await self.sessions.end_all(goodbye=reason, detail=detail)
        summary = RunSummary(
            finished,
            tuple(episodes),
            self.team_step,
            dict(self.counters),
            never_joined=never_joined,
            failure=failure,
        )
        self.recorder.write(
            "run_end",
            finished=finished,
            team_steps=self.team_step,
            stats={k: vars(v) for k, v in self.counters.items()},
            never_joined=list(never_joined),
            incomplete_team_episodes=summary.incomplete_team_episodes,
            failure=failure,
            exit_status=summary.exit_status,
        )
        return summary

    async def _wait_for_team(self) -> None:
        deadline = time.monotonic() + self.config.team_wait_s
        changed = self.sessions.changed
        n = len(self.team.agents)
        while not self._stop_event.is_set():
            attached = self.sessions.attached_count()
            if attached == n:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "starting with %d of %d agents after waiting %.1f s",
                    attached,
                    n,
                    self.config.team_wait_s,
                )
                return
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def _broadcast(self, msg: pb.CoordinatorMessage) -> None:
        live = list(self.sessions.live.values())
        await asyncio.gather(*(s.write(msg) for s in live if s.attached))

    async def _run_episode(self, index: int) -> dict[str, Any]:
        cfg = self.config
        source = self.source
        seed = cfg.seed + index
        self.sessions.current_episode += 1
        episode_id = self.sessions.current_episode
        n = len(self.team.agents)
        env_error: str | None = None
        try:
            source.reset(seed)
        except Exception as e:  # an env bug: this episode ends, the run goes on
            env_error = _env_failure("reset", seed, e)
        self.recorder.write("episode_start", episode_id=episode_id, episode_index=index, seed=seed)
        await self._broadcast(
            pb.CoordinatorMessage(episode_start=pb.EpisodeStart(episode_id=episode_id, seed=seed))
        )
        ids = self.team.agent_ids
        live = self.sessions.live
        misses = [0] * n
        dead: set[int] = set()
        absent: set[int] = set()  # seats empty at some step of this episode
        prev_actions: np.ndarray | None = None
        total, reason, steps = 0.0, "limit", 0
        period = cfg.step_period_ms / 1000.0
        t_start = time.perf_counter()
        for step in range(self.episode_limit if env_error is None else 0):
            if self._stop_event.is_set():
                reason = "stopped"
                break
            alive = source.alive()
            alive_now = alive.tolist()
            absent.update(
                i for i in range(n) if alive_now[i] and not (i in live and live[i].attached)
            )
            actions, got, invalid, exchange_us, late = await self._exchange(
                episode_id, step, alive, prev_actions
            )
            prev_actions = actions if source.tensors else None
            fallback = [ids[i] for i in range(n) if alive_now[i] and i not in got]
            for i in range(n):
                if not alive_now[i]:
                    continue
                if i in got:
                    misses[i] = 0
                    self.counters[ids[i]].decisions += 1
                    continue
                self.counters[ids[i]].fallbacks += 1
                if i in invalid:  # it answered: alive, though its answer was replaced
                    misses[i] = 0
                    continue
                misses[i] += 1
                if misses[i] >= cfg.lease_steps and i not in dead:
                    dead.add(i)
                    await self._declare_dead(i, misses[i])
            step_rec: dict[str, Any] = {
                "type": "step",
                "episode_id": episode_id,
                "episode_index": index,
                "step": step,
                "team_step": self.team_step,
                "actions": actions.tolist(),
                "fallback": fallback,
                "invalid": [ids[i] for i in sorted(invalid)],
                "late": {ids[i]: k for i, k in late.items()},
                "exchange_us": exchange_us,
                "t_ms": round((time.perf_counter() - self._t0) * 1000.0, 3),
                "decision_us": {ids[i]: got[i].decision_us for i in got},
            }
            self.team_step += 1
            steps = step + 1
            if dead and cfg.team_policy == "abort_episode":
                names = [ids[i] for i in sorted(dead)]
                reason = f"aborted: {', '.join(names)} silent for {cfg.lease_steps} steps"
                step_rec["reward"], step_rec["applied"] = None, False
                self.recorder.write_record(step_rec)
                self._on_step()
                break
            try:
                applied = source.apply(actions, got, step_rec)
            except Exception as e:  # an env bug: this episode ends, the run goes on
                env_error = _env_failure(f"step {step} of", seed, e)
                step_rec["reward"], step_rec["applied"] = None, False
                self.recorder.write_record(step_rec)
                self._on_step()
                break
            total += applied.reward
            self.recorder.write_record(step_rec)
            self._on_step()
            if applied.end is not None:
                reason = applied.end
                break
            if cfg.stop_after_steps is not None and self.team_step >= cfg.stop_after_steps:
                log.info("stop_after_steps=%d reached", cfg.stop_after_steps)
                await self._stop()
            if period > 0:
                pause = t_start + (step + 1) * period - time.perf_counter()
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop_event.wait(), pause)
        if env_error is not None:
            reason = "env_error"
        ep: dict[str, Any] = {
            "episode_id": episode_id,
            "episode_index": index,
            "seed": seed,
            "steps": steps,
            "return": total,
            "reason": reason,
            "absent": [ids[i] for i in sorted(absent)],
        }
        if env_error is not None:
            ep["error"] = env_error
        self.recorder.write("episode_end", **ep)
        await self._broadcast(
            pb.CoordinatorMessage(
                episode_end=pb.EpisodeEnd(
                    episode_id=episode_id, steps=steps, team_return=total, reason=reason
                )
            )
        )
        return ep

    async def _exchange(
        self,
        episode_id: int,
        step: int,
        alive: np.ndarray,
        prev_actions: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[int, pb.StepReply], set[int], int, dict[int, int]]:
        """Send step ``step`` to every live agent and collect replies until all or the deadline.

        Returns (actions int64 (n_agents,): every one legal under the step's mask, valid replies by
        agent index, agents whose reply was invalid (replaced), exchange time in us, replies
        discarded during this step by agent index).
        """
        n = len(self.team.agents)
        loop = asyncio.get_running_loop()
        live = {i: s for i, s in self.sessions.live.items() if s.attached and alive[i]}
        requests: list[tuple[Session, pb.CoordinatorMessage]] = []
        masks: dict[int, np.ndarray] = {}
        tensors = self.source.tensors
        avail_all = np.zeros((0, 0), dtype=bool)  # field mode: no masks here
        if tensors:
            # Once per step for the whole team: the observations (n_agents, max obs_dim) and a
            # private copy of the masks (n_agents, max n_actions) the replies are checked against
            # (the env may reuse its arrays).
            obs, avail = self.source.observations()
            obs_all = np.ascontiguousarray(obs)
            avail_all = np.array(avail)
            # Anything but the env contract's float32 and bool goes through the codec, which
            # converts or refuses it.
            exact = obs_all.dtype == _WIRE_F32 and avail_all.dtype == np.bool_
        deadline_ms = self.config.step_deadline_ms
        team_step = self.team_step
        rebuild = team_step % _STEP_MESSAGE_REUSE == 0
        for i, s in live.items():
            msg = s.step_message
            if msg is None or rebuild:
                msg = s.step_message = new_step_message(self.team.agents[i], with_tensors=tensors)
            req = msg.step_request
            req.episode_id = episode_id
            req.step = step
            req.deadline_ms = deadline_ms
            req.team_step = team_step
            if prev_actions is not None:
                req.previous_action = int(prev_actions[i])
            else:
                req.ClearField("previous_action")
            if tensors:
                slot = self.team.agents[i]
                # The agent's own observation (obs_dim,) float32 at its true size, bit for bit,
                # and its mask (n_actions,) bool, as raw little-endian bytes.
                o = obs_all[i, : slot.obs_dim]
                mask = avail_all[i, : slot.n_actions]
                if exact:
                    req.observation.data = o.tobytes()
                    req.action_mask.data = mask.tobytes()
                else:
                    req.observation.CopyFrom(wire.encode(o))
                    req.action_mask.CopyFrom(wire.encode(mask))
                    mask = np.array(mask, dtype=bool)
                    s.step_message = None  # its tensor headers may differ: rebuild next step
                masks[i] = mask
            requests.append((s, msg))
        w = StepWindow(episode_id, step, set(live), masks, loop.create_future())
        self._window = w
        t0 = time.perf_counter()
        timer = loop.call_later(
            deadline_ms / 1000.0,
            lambda: None if w.done.done() else w.done.set_result(None),
        )
        # Step lane sessions are sent at once (a buffered socket write); Steps streams await
        # their writes together.
        streams = []
        for s, msg in requests:
            link = s.lane
            if link is None:
                streams.append((s, msg))
            elif s.ended or not link.send(msg):  # the lane is gone: do not wait for this agent
                w.expected.discard(s.agent_index)
        if streams:
            sent = await asyncio.gather(*(s.write(msg) for s, msg in streams))
            for (s, _), ok in zip(streams, sent, strict=True):
                if not ok:  # the stream is gone: do not wait for this agent
                    w.expected.discard(s.agent_index)
        w.check_complete()
        await w.done
        timer.cancel()
        self._window = None
        exchange_us = int((time.perf_counter() - t0) * 1e6)
        got = w.replies
        agents = self.team.agents
        actions = np.empty(n, dtype=np.int64)  # (n_agents,)
        for i in range(n):
            if i in got:
                actions[i] = got[i].action  # checked against the mask on arrival (accept)
                continue
            slot = agents[i]
            seat_mask = masks.get(i)
            if seat_mask is None and tensors:  # an empty seat: the env's mask still holds
                seat_mask = avail_all[i, : slot.n_actions]
            actions[i] = substitute(slot.fallback_action, slot.n_actions, seat_mask)
        if tensors:
            # The action of an agent no longer in the episode is a placeholder the env ignores.
            actions[~alive] = 0
        return actions, got, w.invalid, exchange_us, w.late

    async def _declare_dead(self, i: int, missed: int) -> None:
        """The lease of agent ``i`` expired. A live session is closed (counted as a death); an agent
        that is already gone only triggers the team policy again."""
        agent_id = self.team.agents[i].agent_id
        s = self.sessions.live.get(i)
        log.warning(
            "agent %s missed %d consecutive steps (%s): lease expired (%s)",
            agent_id,
            missed,
            "connected" if s is not None else "not connected",
            self.config.team_policy,
        )
        if s is not None:
            self.counters[agent_id].deaths += 1
            await self.sessions.end(
                s, goodbye=pb.GOODBYE_REASON_LEASE_EXPIRED, detail="lease expired"
            )


def new_step_message(slot: AgentSlot, *, with_tensors: bool) -> pb.CoordinatorMessage:
    """``slot``'s reusable StepRequest with its constant tensor headers pre-set (the step clock
    then sets only what changes from step to step)."""
    msg = pb.CoordinatorMessage()
    req = msg.step_request
    if with_tensors:
        req.observation.CopyFrom(wire.encode(np.zeros(slot.obs_dim, dtype=np.float32)))
        req.action_mask.CopyFrom(wire.encode(np.zeros(slot.n_actions, dtype=bool)))
    return msg


def _env_failure(where: str, seed: int, error: Exception) -> str:
    """The record's (and the log's) account of an environment that raised."""
    message = f"{type(error).__name__}: {error}"
    log.error("the environment raised in %s the episode with seed %d: %s", where, seed, message)
    log.debug("environment traceback", exc_info=error)
    return message
