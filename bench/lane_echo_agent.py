"""A protocol-correct agent that decides nothing: the floor under a team step (bench only).

It joins on the step lane exactly as `qmix-agent --step-lane-address` does (protocol
qmix_edge.v1: a join frame naming the agent and its artifact's sha256, then join_reply), and
answers every StepRequest at once with the lowest allowed action, without loading onnxruntime.
A team of these beside the real coordinator measures what the coordinator and the transport cost
a team step; the difference to a team of real agents is what the agents' decisions cost.

    python bench/lane_echo_agent.py ARTIFACT_DIR AGENT_ID HOST:PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qmix_edge.runtime import lane, wire
from qmix_edge.runtime.proto.v1 import team_pb2 as pb


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    artifacts, agent_id, address = args
    manifest = json.loads((Path(artifacts) / "manifest.json").read_text())
    entry = next((a for a in manifest["agents"] if a["agent_id"] == agent_id), None)
    if entry is None:
        print(f"{agent_id!r} is not in {artifacts}/manifest.json", file=sys.stderr)
        return 2
    host, port = lane.parse_address(address)
    client = lane.LaneClient(host, port, max_message_bytes=wire.MAX_MESSAGE_BYTES)
    client.send(
        pb.AgentMessage(
            join=pb.JoinRequest(
                protocol_version=wire.PROTOCOL_VERSION,
                agent_id=agent_id,
                artifact_sha256=entry["sha256"],
                client_name="bench-echo",
                step_lane=True,
            )
        )
    )
    answer = client.recv()
    if answer is None or answer.WhichOneof("kind") != "join_reply":
        print(f"join refused or lane closed: {answer}", file=sys.stderr)
        return 1
    while (msg := client.recv()) is not None:
        kind = msg.WhichOneof("kind")
        if kind == "goodbye":
            break
        if kind != "step_request":
            continue
        req = msg.step_request
        out = pb.AgentMessage()
        reply = out.step_reply
        reply.SetInParent()
        reply.episode_id = req.episode_id
        reply.step = req.step
        mask = req.action_mask.data
        reply.action = next((i for i, allowed in enumerate(mask) if allowed), 0)
        client.send(out)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
