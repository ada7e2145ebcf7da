"""``qmix-deploy``: offer a new artifact set to a team in the field and follow its rollout.

Mission control (``qmix-coordinator --mode mission``) offers the set to every agent; each downloads,
verifies (every file's sha256, the manifest's Ed25519 signature, its own graph) and stages it; the
team switches at one episode boundary once every agent has staged it, or not at all. This command
prints each agent's progress and exits 0 once every agent runs the new version, 1 when the rollout
was cancelled (the reason printed; the team stays on its version) or not finished in time, 2 on a
usage or configuration error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from qmix_edge.common import settings
from qmix_edge.common.settings import setting

from ..errors import RuntimeFailure
from .operator import OperatorFlags, dial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployConfig(OperatorFlags):
    """What qmix-deploy is told (every field is a flag)."""

    artifacts: str = setting(
        "",
        "The artifact directory to roll out, as a path on mission control's host (qmix-export's "
        "output, signed when the agents' stores have a public key).",
        required=True,
    )
    timeout_s: float = setting(
        600.0, "Stop following (exit 1) after this long; the rollout goes on."
    )


def main(argv: Sequence[str] | None = None) -> int:
    import grpc

    from ..proto.v1 import mission_pb2 as mpb
    from ..proto.v1 import mission_pb2_grpc as mpb_grpc

    try:
        cfg, _ = settings.parse(
            DeployConfig, settings.build_parser(DeployConfig, "qmix-deploy", __doc__ or ""), argv
        )
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(level=cfg.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        channel, metadata = dial(cfg)
    except RuntimeFailure as e:
        print(f"qmix-deploy: error: {e}", file=sys.stderr)
        return 2
    last: dict[str, str] = {}
    final = None
    try:
        with channel:
            stub = mpb_grpc.MissionStub(channel)
            request = mpb.DeployRequest(artifacts=cfg.artifacts, timeout_s=cfg.timeout_s)
            for p in stub.Deploy(request, metadata=metadata, timeout=cfg.timeout_s + 30):
                if not last:
                    print(f"offered {p.version[:12]} to {len(p.agents)} agents")
                for agent, state in sorted(p.agents.items()):
                    if state and last.get(agent) != state:
                        print(f"  {agent}: {state}")
                if p.switch_at_episode and not last.get("__switch"):
                    print(
                        f"every agent staged it: the team switches at episode {p.switch_at_episode}"
                    )
                    last["__switch"] = "1"
                last.update(p.agents)
                final = p
    except grpc.RpcError as e:
        code = e.code()  # type: ignore[attr-defined]
        print(f"qmix-deploy: {code.name}: {e.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        usage = code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
        return 2 if usage else 1
    if final is None or not final.done:
        print(
            f"qmix-deploy: not finished after {cfg.timeout_s:.0f} s; the rollout goes on",
            file=sys.stderr,
        )
        return 1
    if final.cancelled:
        print(
            f"qmix-deploy: rollout cancelled: {final.cancelled}; the team stays on its version",
            file=sys.stderr,
        )
        return 1
    print(
        f"switched: every agent runs {final.version[:12]} since episode {final.switch_at_episode}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
