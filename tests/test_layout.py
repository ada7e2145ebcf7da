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


PACKAGE_FOLDERS = ("qmix_edge", "common", "envs", "train", "export", "runtime")
"""Folders of the qmix_edge namespace: qmix_edge/ is the root, each other one a subpackage."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "qmix_edge" else ["qmix_edge", *parts])


def _package_modules() -> dict[str, Path]:
    """Every module of the namespace (generated protobuf code excluded), by dotted name."""
    return {
        _module_name(p): p
        for folder in PACKAGE_FOLDERS
        for p in (ROOT / folder).rglob("*.py")
        if "proto" not in p.relative_to(ROOT).parts
    }


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (imports there never run)."""
    return {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }


def _import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` it imports anywhere, also inside functions (a deferred
    import hides a cycle, it does not remove it), except under ``if TYPE_CHECKING:``.

    ``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg`` (its
    ``__init__`` defines the name). The parent packages Python imports implicitly before a module
    are not edges: a package's ``__init__`` re-exporting its submodules is not a cycle, but a
    submodule that explicitly imports from its own package's ``__init__`` is."""

    def owner(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_nodes(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps.update(m for a in node.names if (m := owner(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in files else owner(base)
                    if target:
                        deps.add(target)
        deps.discard(module)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles() -> None:
    """No modules of the package import each other, directly or around a loop."""
    cycles = _cycles(_import_graph(_package_modules()))
    assert not cycles, "import cycles (each line one set of modules that import each other):\n" + (
        "\n".join(" <-> ".join(c) for c in cycles)
    )


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_deferred_relative_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    sources = {
        "__init__.py": "from .a import A\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n",
        "b.py": "def f():\n    from . import c\n    from pkg import A\n",
        "c.py": "import pkg.a\n",
    }
    for name, text in sources.items():
        (pkg / name).write_text(text)
    files = {"pkg" if n == "__init__.py" else f"pkg.{n[:-3]}": pkg / n for n in sources}
    assert _import_graph(files) == {
        "pkg": {"pkg.a"},
        "pkg.a": set(),
        "pkg.b": {"pkg.c", "pkg"},
        "pkg.c": {"pkg.a"},
    }


SIZE_CHECKED = ("qmix_edge", "common", "envs", "train", "export", "runtime")
"""Every package folder (generated gRPC code under runtime/proto is not ours to split)."""
MAX_MODULE_LINES = 600


def test_modules_stay_under_600_lines() -> None:
    """A module past ~600 lines is two ideas: split it where the responsibilities part."""
    big = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for folder in SIZE_CHECKED
        for p in sorted((ROOT / folder).rglob("*.py"))
        if "proto" not in p.relative_to(ROOT).parts
        and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not big, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(big)
