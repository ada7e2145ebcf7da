"""The device policy runs with numpy and onnxruntime only: torch and onnx are never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from qmix_edge.envs import AgentSpec, EnvSpec
    from qmix_edge.export import export_agent_networks
    from qmix_edge.train.networks import AgentNetwork

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = EnvSpec("no_torch", (AgentSpec("agent_0", 4, 3), AgentSpec("agent_1", 4, 3)), 8, 5)
    out = tmp_path_factory.mktemp("no_torch") / "art"
    export_agent_networks(AgentNetwork(spec, "gru", hidden_dim=8), spec, out)
    return out


def test_policy_never_imports_torch_or_onnx(artifact: Path) -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from qmix_edge.runtime.policy import AgentPolicy\n"
        "from qmix_edge.runtime.artifact import Manifest\n"
        f"m = Manifest.load({str(artifact)!r})\n"
        f"p = AgentPolicy.load({str(artifact)!r}, 'agent_1')\n"
        "r = p.act(np.zeros(4, np.float32), np.array([False, True, True]))\n"
        "assert r.action in (1, 2), r\n"
        "p.reset()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxscript'))\n"
        "print(bad)\n"
        "sys.exit(3 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"exit {proc.returncode} (3 = forbidden import)\n{proc.stdout}{proc.stderr}"
    )
