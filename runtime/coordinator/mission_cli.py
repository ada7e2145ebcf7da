"""``qmix-mission``: the operator's commands to mission control (``qmix-coordinator --mode
mission``): show the team, or pause, resume or end its episode for every agent at one agreed
instant.

Prints the team (mission control's phase and episode, then one line per agent: linked, the
artifact it runs, its phase, episode, decisions, overruns, when last heard, its rollout state).
Exit status: 0 done; 1 mission control refused the command (e.g. nothing to pause: the reason
is printed) or could not be reached; 2 a usage or configuration error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from qmix_edge.common import settings
from qmix_edge.common.settings import setting

from ..errors import RuntimeFailure
from ..proto.v1 import mission_pb2 as mpb
from .operator import OperatorFlags, dial

Action = Literal["status", "pause", "resume", "end"]

EXAMPLES = """
examples:
  qmix-mission --coordinator 127.0.0.1:50051 --action status
  qmix-mission --coordinator 127.0.0.1:50051 --action pause --lead-s 0.5
"""


@dataclass(frozen=True)
class MissionCommandConfig(OperatorFlags):
    """What qmix-mission is told (every field is a flag)."""

    action: Action = setting(
        "status",
        "status: show the team; pause, resume or end: the team's episode, for every agent at "
        "the same instant.",
    )
    lead_s: float = setting(
        0.0,
        "Announce the change this long ahead (seconds); 0 = mission control's --start-lead-ms.",
    )


def describe(s: mpb.MissionState) -> list[str]:
    """The team's state as qmix-mission prints it."""
    lines = [f"team {s.team_id}: {s.phase}, episode {s.episode_id}, artifact {s.version[:12]}"]
    for agent, a in sorted(s.agents.items()):
        heard = "never" if a.last_heard_s < 0 else f"{a.last_heard_s:.1f} s ago"
        link = "linked" if a.linked else "not linked"
        lines.append(
            f"  {agent}: {link}, artifact {a.version[:12] or '-'}, {a.phase or '-'} in episode "
            f"{a.episode_id}, {a.decisions} decisions, {a.overruns} overruns, heard {heard}"
            + (f", rollout {a.rollout[:160]}" if a.rollout else "")
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    import grpc

    from ..proto.v1 import mission_pb2_grpc as mpb_grpc

    try:
        parser = settings.build_parser(
            MissionCommandConfig, "qmix-mission", (__doc__ or "") + EXAMPLES
        )
        cfg, _ = settings.parse(MissionCommandConfig, parser, argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=cfg.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        channel, metadata = dial(cfg)
    except RuntimeFailure as e:
        print(f"qmix-mission: error: {e}", file=sys.stderr)
        return 2
    try:
        with channel:
            state = mpb_grpc.MissionStub(channel).Operate(
                mpb.OperateRequest(action=cfg.action.upper(), lead_s=cfg.lead_s),
                metadata=metadata,
                timeout=30,
            )
    except grpc.RpcError as e:
        code = e.code()  # type: ignore[attr-defined]
        print(f"qmix-mission: {code.name}: {e.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 2 if code == grpc.StatusCode.PERMISSION_DENIED else 1
    if cfg.action != "status":
        print(f"{cfg.action} announced for {state.at:.3f} on mission control's clock")
    print("\n".join(describe(state)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
