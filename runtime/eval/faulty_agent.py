"""A qmix-agent with failures injected on purpose: what qmix-eval launches for an agent whose fault
plan kills, stalls or drops. Never part of the device command.

    python -m qmix_edge.runtime.eval.faulty_agent [FAULT FLAGS] -- [qmix-agent flags]

Everything after ``--`` is read by qmix-agent's own parser and run by its own runner
(`qmix_edge.runtime.agent.cli.main`); the only difference is the `FaultyAnswerer`, a
`StepAnswerer` whose public `answer` is wrapped:

- ``--kill-at-step N``: SIGKILL this process on receiving team step >= N (``StepRequest.team_step``);
- ``--stall-at-step N --stall-ms MS``: sleep MS before answering the first team step >= N, once;
- ``--drop-fraction F --drop-seed S``: leave a fraction F of step requests unanswered, decided by
  ``random.Random(S)``.

Must not import torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from qmix_edge.common import settings
from qmix_edge.common.settings import setting

from ..agent import cli as agent_cli
from ..agent.answer import AgentStats, PolicyLike, StepAnswerer
from ..agent.runner import AnswererFactory
from ..field import Actuator, Sensor
from ..proto.v1 import team_pb2 as pb

log = logging.getLogger("qmix_edge.runtime.eval.faulty_agent")  # also when run as __main__


@dataclass(frozen=True)
class AgentFaults:
    """The failures one agent process injects (every field is a fault flag)."""

    kill_at_step: int | None = setting(
        None, "SIGKILL this agent on receiving this team step (or the first one after it)."
    )
    stall_at_step: int | None = setting(
        None, "Sleep --stall-ms before answering this team step (or the first after it), once."
    )
    stall_ms: int = setting(0, "How long the stall lasts, in milliseconds.")
    drop_fraction: float = setting(0.0, "Fraction of step requests left unanswered, in [0, 1].")
    drop_seed: int = setting(0, "Seed of the drop decisions (random.Random).")

    def __post_init__(self) -> None:
        for name in ("kill_at_step", "stall_at_step"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is a team step, >= 0; found {value}")
        if self.stall_ms < 0:
            raise ValueError(f"stall_ms must be >= 0; found {self.stall_ms}")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in [0, 1]; found {self.drop_fraction}")


class FaultyAnswerer(StepAnswerer):
    """A `StepAnswerer` that kills its process, stalls once, or drops replies, per `AgentFaults`."""

    def __init__(
        self,
        policy: PolicyLike,
        *,
        faults: AgentFaults,
        sensor: Sensor | None = None,
        actuator: Actuator | None = None,
        stats: AgentStats | None = None,
    ) -> None:
        super().__init__(policy, sensor=sensor, actuator=actuator, stats=stats)
        self.faults = faults
        self.dropped = 0
        """Step requests left unanswered so far."""
        self.stalled = False
        """The one stall has happened."""
        self._drop_rng = random.Random(faults.drop_seed)

    def answer(self, req: pb.StepRequest, into: pb.StepReply | None = None) -> pb.StepReply | None:
        f = self.faults
        if f.kill_at_step is not None and req.team_step >= f.kill_at_step:
            log.warning("fault plan: killing this agent at team step %d", req.team_step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        if f.drop_fraction > 0 and self._drop_rng.random() < f.drop_fraction:
            self.dropped += 1
            return None
        reply = super().answer(req, into)
        if f.stall_at_step is not None and not self.stalled and req.team_step >= f.stall_at_step:
            self.stalled = True
            log.warning("fault plan: stalling %d ms at team step %d", f.stall_ms, req.team_step)
            time.sleep(f.stall_ms / 1000.0)
        return reply


def faulty(faults: AgentFaults) -> AnswererFactory:
    """The `AgentRunner` answerer factory that injects ``faults``."""
    return partial(FaultyAnswerer, faults=faults)


DESCRIPTION = """\
Run qmix-agent with failures injected (qmix-eval's fault plans): everything after
'--' is qmix-agent's own command line; the flags before it say what goes wrong.

example:
  python -m qmix_edge.runtime.eval.faulty_agent --kill-at-step 5 -- \\
      --artifacts artifacts/run1 --agent agent_0 --coordinator 127.0.0.1:50051
"""


def build_parser() -> argparse.ArgumentParser:
    """The fault flags: the fields of `AgentFaults`."""
    return settings.build_parser(
        AgentFaults,
        "python -m qmix_edge.runtime.eval.faulty_agent",
        DESCRIPTION,
        epilog="qmix-agent's flags (after '--'): see qmix-agent --help",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the fault flags (before ``--``), then run qmix-agent on the rest with them."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    cut = args.index("--") if "--" in args else len(args)
    try:
        faults, _ = settings.parse(AgentFaults, parser, args[:cut])
        if cut == len(args):
            parser.error(
                "expected FAULT FLAGS -- QMIX-AGENT FLAGS; found no '--' before qmix-agent's flags"
            )
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    return agent_cli.main(args[cut + 1 :], answerer=faulty(faults))


if __name__ == "__main__":
    sys.exit(main())
