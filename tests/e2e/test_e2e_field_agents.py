"""Field agents as real `qmix-agent --rate-hz` processes: each on its own clock, reading the
simulated world through its sensor plug-in and acting through its actuator plug-in, its graph
installed in its own artifact store, its own record written. Episodes the agents played entirely
with their own decisions return exactly what the same graphs return in lockstep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qmix_edge.envs import make_env
from qmix_edge.runtime.agent.store import ArtifactStore
from qmix_edge.runtime.artifact import Manifest
from qmix_edge.runtime.eval import EvalConfig, run_reference
from qmix_edge.runtime.eval.field_sim import ADDRESS_ENV, FieldSimulator


@pytest.mark.slow
def test_field_agents_play_the_world_on_their_own_clocks(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    manifest = Manifest.load(two_step_artifacts)
    env = make_env("two_step", n_agents=2)
    fallbacks = [manifest.agent(a).fallback_action for a in manifest.agent_ids]
    sim = FieldSimulator(env, manifest.agent_ids, fallbacks, rate_hz=5, seed=3, episodes=4)
    procs = []
    for agent in manifest.agent_ids:
        cmd = [
            sys.executable, "-m", "qmix_edge.runtime.agent",
            "--artifacts", str(two_step_artifacts), "--agent", agent, "--rate-hz", "50",
            "--sensor", "qmix_edge.runtime.eval.field_sim:sensor",
            "--actuator", "qmix_edge.runtime.eval.field_sim:actuator",
            "--store", str(tmp_path / f"store_{agent}"),
            "--record", str(tmp_path / f"{agent}.jsonl"),
        ]  # fmt: skip
        env_vars = {**os.environ, ADDRESS_ENV: f"{sim.address[0]}:{sim.address[1]}"}
        procs.append(
            subprocess.Popen(cmd, env=env_vars, stderr=open(tmp_path / f"{agent}.log", "w"))  # noqa: SIM115
        )
    try:
        assert sim.wait_for_agents(60), "the agents never reached the simulator"
        episodes = sim.run()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in procs]
        sim.close()
    logs = {a: (tmp_path / f"{a}.log").read_text() for a in manifest.agent_ids}
    assert codes == [0, 0], logs
    reference = run_reference(
        EvalConfig(artifacts=two_step_artifacts, report=tmp_path / "r.json", episodes=4, seed=3),
        manifest.agent_ids,
    )
    own = [i for i, e in enumerate(episodes) if not any(e.substituted.values())]
    assert own, f"no episode was played by the agents alone: {episodes}"
    for i in own:
        assert episodes[i].ret == reference[i]
    for agent in manifest.agent_ids:
        lines = [json.loads(x) for x in (tmp_path / f"{agent}.jsonl").read_text().splitlines()]
        assert sum(x["why"] == "decided" for x in lines) > 0
        store = ArtifactStore(tmp_path / f"store_{agent}")
        assert store.current is not None and store.path().joinpath(f"{agent}.onnx").is_file()
