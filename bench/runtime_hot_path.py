"""The runtime's own per-step Python work, without the transport: what is left to cut in our code.

Measured in one process, on this machine (no transport is involved; compare with the CPU per team
step that bench/runtime_step_latency.py prints, on each carrier):
1. the coordinator building one team step's StepRequests (N agents, reused messages), as
   the coordinator's step clock does;
2. appending one step record to the JSONL run record (checked against the record schema, one
   unbuffered write), against `UncheckedWriter`, the write path as it was before the schema (no
   check, `JSONEncoder.encode` per line), in the same run;
3. the agent answering one StepRequest (decode + validate the tensors, ONNX policy, reply), and the
   ONNX `policy.act` alone, on an exported GRU agent with random weights.

    .venv/bin/python bench/runtime_hot_path.py [--agents 3 16]

Needs the [train] extra (torch) to export the bench artifact; the measured code does not use it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import timeit
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_step_latency import OBS_DIM, NullEnv, export_bench_artifact

from qmix_edge.runtime import wire
from qmix_edge.runtime.agent import AgentRunner, load_policy
from qmix_edge.runtime.coordinator import TeamSpec
from qmix_edge.runtime.coordinator.clock import new_step_message
from qmix_edge.runtime.proto.v1 import team_pb2 as pb
from qmix_edge.runtime.records import RecordWriter


def best_us(fn: object, number: int) -> float:
    """Best of 3 mean times of ``fn()`` in us."""
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6  # type: ignore[arg-type]


class UncheckedWriter:
    """`RecordWriter`'s write path as it was before records had a schema (the baseline): one
    shared compact encoder, one unbuffered write under a lock, no check of the record."""

    def __init__(self, path: Path) -> None:
        self._file: Any = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self._encoder = json.JSONEncoder(separators=(",", ":"))

    def write_record(self, record: dict[str, Any]) -> None:
        data = (self._encoder.encode(record) + "\n").encode("utf-8")
        with self._lock:
            f = self._file
            if f is None:
                raise ValueError("closed")
            written = f.write(data)
            while written is not None and written < len(data):
                data = data[written:]
                written = f.write(data)

    def close(self) -> None:
        self._file.close()


def coordinator_costs(
    n: int, workdir: Path, number: int, rounds: int = 7
) -> tuple[float, float, float, Path, Any]:
    """(us to build a team step's requests, us to append its step record, the same before the
    record schema, artifact, TeamStep)."""
    env = NullEnv(n, 250)
    art = export_bench_artifact(env.spec, workdir / f"art{n}")
    team = TeamSpec.from_artifacts(art)
    ts = env.reset(0)
    prev = np.zeros(n, dtype=np.int64)
    msgs = [new_step_message(slot, with_tensors=True) for slot in team.agents]

    def build() -> None:
        obs_all = np.ascontiguousarray(ts.obs)  # (n_agents, obs_dim)
        avail_all = np.array(ts.avail)  # (n_agents, n_actions)
        for i, msg in enumerate(msgs):
            req = msg.step_request
            req.episode_id, req.step, req.deadline_ms, req.team_step = 1, 2, 200, 3
            req.previous_action = int(prev[i])
            req.observation.data = obs_all[i, :OBS_DIM].tobytes()
            req.action_mask.data = avail_all[i].tobytes()

    rec = {
        "type": "step",
        **{"episode_id": 1, "episode_index": 0, "step": 5, "team_step": 100},
        "actions": list(range(n)),
        "fallback": [],
        "invalid": [],
        "late": {},
        "exchange_us": 700,
        "t_ms": 12345.678,
        "decision_us": {a: 80 for a in team.agent_ids},
        "reward": 0.0,
        "applied": True,
    }
    writer = RecordWriter(workdir / f"rec{n}.jsonl")
    unchecked = UncheckedWriter(workdir / f"raw{n}.jsonl")
    try:
        t_build = best_us(build, number)
        # Alternate the two, best of each, so a burst of load hits both alike.
        t_rec, t_raw = float("inf"), float("inf")
        for _ in range(rounds):
            t_raw = min(t_raw, best_us(lambda: unchecked.write_record(rec), number))
            t_rec = min(t_rec, best_us(lambda: writer.write_record(rec), number))
    finally:
        writer.close()
        unchecked.close()
    return t_build, t_rec, t_raw, art, ts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[3, 16], help="team sizes")
    ap.add_argument("--number", type=int, default=3000, help="calls per timing")
    ap.add_argument(
        "--rounds", type=int, default=7, help="alternations of the checked and unchecked record"
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qmix-hot-") as d:
        for n in args.agents:
            t_build, t_rec, t_raw, art, ts = coordinator_costs(n, Path(d), args.number, args.rounds)
            print(
                f"{n:>2} agents, coordinator: build a team step's requests {t_build:.1f} us, "
                f"append its step record {t_rec:.1f} us (the write path before the record schema "
                f"{t_raw:.1f} us: ratio {t_rec / t_raw:.2f})"
            )
        policy = load_policy(str(art), "agent_0", None)
        runner = AgentRunner(policy, "127.0.0.1:1")
        req = pb.StepRequest(episode_id=1, step=2, team_step=3, previous_action=1)
        req.observation.CopyFrom(wire.encode(np.asarray(ts.obs[0, :OBS_DIM])))
        req.action_mask.CopyFrom(wire.encode(np.asarray(ts.avail[0])))
        t_answer = best_us(
            lambda: pb.AgentMessage(step_reply=runner.answerer.answer(req)), args.number
        )
        obs = np.asarray(ts.obs[0, :OBS_DIM])
        t_act = best_us(lambda: policy.act(obs, None), args.number)
        print(f"agent: answer one StepRequest {t_answer:.1f} us (policy.act alone {t_act:.1f} us)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
