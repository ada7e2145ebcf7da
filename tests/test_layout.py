"""The one import rule: train <- export -> runtime; runtime and envs never import torch.

Checked two ways: statically (every import statement in runtime/ and envs/) and dynamically (a fresh
interpreter imports every runtime and envs module and must not end up with torch loaded).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package folder -> top-level import names it must never use
FORBIDDEN = {
    "common": {
        "qmix_edge.envs",
        "qmix_edge.train",
        "qmix_edge.export",
        "qmix_edge.runtime",
        "numpy",
        "torch",
        "yaml",
    },
    "runtime": {"torch", "qmix_edge.train", "qmix_edge.export", "onnx"},
    "envs": {"torch", "qmix_edge.train", "qmix_edge.export", "qmix_edge.runtime"},
    "train": {"qmix_edge.export", "qmix_edge.runtime"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _violates(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependency_direction_static(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if _violates(name, FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "dependency rule broken:\n" + "\n".join(bad)


def test_runtime_and_envs_import_without_torch() -> None:
    modules = sorted(
        "qmix_edge."
        + ("runtime" if p.parts[0] == "runtime" else "envs")
        + "."
        + ".".join(p.with_suffix("").parts[1:])
        for folder in ("runtime", "envs")
        for p in (q.relative_to(ROOT) for q in (ROOT / folder).rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and "proto" not in p.parts
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "import qmix_edge, qmix_edge.runtime, qmix_edge.envs\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode} (3 = torch was imported)\n{proc.stderr}"


def test_package_root_is_light() -> None:
    code = "import sys, qmix_edge; sys.exit(3 if 'torch' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
