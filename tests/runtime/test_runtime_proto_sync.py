"""The committed generated code is exactly what scripts/gen_protos.sh makes from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    committed = ROOT / "runtime" / "proto"
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "the generator produced nothing"
    stale = [
        str(rel)
        for rel in generated
        if not (committed / rel).exists()
        or (committed / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert not stale, f"run scripts/gen_protos.sh and commit: out of date {stale}"
    extra = sorted(
        str(p.relative_to(committed))
        for p in committed.rglob("*_pb2*.py*")
        if p.relative_to(committed) not in generated
    )
    assert not extra, f"generated files without a .proto source: {extra}"


def test_every_message_and_field_is_documented() -> None:
    """A C++/Rust team implements the protocol from the .proto alone: nothing goes unexplained."""
    undocumented = []
    for proto in (ROOT / "protos").rglob("*.proto"):
        lines = proto.read_text().splitlines()
        for n, line in enumerate(lines):
            s = line.strip()
            declares = s.startswith(("message ", "enum ", "rpc ", "service ")) or (
                s.endswith(";")
                and "=" in s
                and not s.startswith(("syntax", "package", "option", "//"))
            )
            if declares and not lines[n - 1].strip().startswith("//"):
                undocumented.append(f"{proto.name}:{n + 1}: {s}")
    assert not undocumented, "undocumented declarations:\n" + "\n".join(undocumented)
