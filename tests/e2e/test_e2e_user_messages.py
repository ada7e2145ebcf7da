"""What a user reads on the terminal when a real command fails: the cause itself, in our words.

Each command runs as a real process and its stderr is what is asserted on: the text a user sees.
- qmix-eval quotes a child's own error line (a coordinator or an agent that exits 2) and names the
  folder where the failed run's records and logs are kept; a successful run leaves no folder;
- qmix-coordinator with a hand-edited manifest names the field, not "use another env";
- qmix-coordinator on a port in use prints our message alone, without gRPC's C-core log line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qmix_edge.runtime.tensors import MANIFEST_FILE

C_CORE_LINE = re.compile(r"^[EWI]\d{4} ", re.MULTILINE)  # gRPC core's own log format


def _run(module: str, *args: str, tmpdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if tmpdir is not None:
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _edited_copy(artifacts: Path, tmp_path: Path, field: str, value: int) -> Path:
    copy = tmp_path / "edited"
    shutil.copytree(artifacts, copy)
    d = json.loads((copy / MANIFEST_FILE).read_text())
    d["agents"][0][field] = value
    (copy / MANIFEST_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    return copy


def _eval(artifacts: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    report = tmp_path / "reports" / "report.json"
    return _run(
        "qmix_edge.runtime.eval",
        *("--artifacts", str(artifacts), "--episodes", "2", "--report", str(report), *extra),
        tmpdir=tmp_path / "tmp",
    )


def _kept_folder(stderr: str) -> Path:
    m = re.search(r"records and logs are kept in (\S+)", stderr)
    assert m, stderr
    return Path(m.group(1))


def test_eval_quotes_the_coordinators_own_error_and_keeps_its_log(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    r = _eval(two_step_artifacts, tmp_path, "--env", "two_stpe")
    assert r.returncode == 1, r.stderr
    assert "the coordinator exited with 2 before serving: EnvError: unknown env id 'two_stpe'." in (
        r.stderr
    )
    assert "Did you mean 'two_step'?" in r.stderr
    kept = _kept_folder(r.stderr)
    assert kept.parent == tmp_path / "tmp" and (kept / "coordinator.log").is_file()
    assert not (tmp_path / "reports").exists() or not list((tmp_path / "reports").iterdir())


def test_eval_quotes_an_agents_own_error(two_step_artifacts: Path, tmp_path: Path) -> None:
    edited = _edited_copy(two_step_artifacts, tmp_path, "fallback_action", 1)
    r = _eval(edited, tmp_path)
    assert r.returncode == 1, r.stderr
    assert re.search(
        r"agent agent_\d exited with 2: ArtifactIntegrityError: manifest\.json disagrees with the "
        r"fp32 graph of agent 'agent_\d' although both come from the same export .*"
        r"agents\[agent_0\]\.fallback_action: manifest\.json 1, graph 0",
        r.stderr,
    ), r.stderr
    assert (_kept_folder(r.stderr) / "agent_0.log").is_file()


def test_successful_eval_leaves_only_the_report_and_its_picture(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    r = _eval(two_step_artifacts, tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.json", "report.png"]
    assert not list((tmp_path / "tmp").glob("qmix-eval-*"))  # the work folder went with it
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["workdir"] is None and report["process"]["record"] is None


def test_coordinator_names_an_edited_obs_dim_not_the_env(
    two_step_artifacts: Path, tmp_path: Path
) -> None:
    edited = _edited_copy(two_step_artifacts, tmp_path, "obs_dim", 5)
    r = _run("qmix_edge.runtime.coordinator", "--artifacts", str(edited), "--port", "0")
    assert r.returncode == 2, r.stderr
    assert "agents[agent_0].obs_dim: manifest.json 5, graph 3" in r.stderr
    assert "Run the coordinator with the env" not in r.stderr


def test_port_in_use_shows_our_message_alone(two_step_artifacts: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _run(
            "qmix_edge.runtime.coordinator",
            *("--artifacts", str(two_step_artifacts), "--port", str(port)),
        )
    assert r.returncode == 1, r.stderr
    assert f"cannot bind 127.0.0.1:{port}: the port is in use" in r.stderr
    assert not C_CORE_LINE.search(r.stderr), r.stderr
    assert "GRPC_VERBOSITY" not in r.stderr


@pytest.fixture(autouse=True)
def _default_grpc_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Children inherit no GRPC_VERBOSITY the developer may have set: the default is tested."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
