"""The folders README's commands write into are ones git ignores and scripts/demo.sh leaves alone.

A user who copies a README command into a clone must not end up with untracked output in
`git status` (or a private key beside the code), nor lose it to the demo's next run.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER_FLAGS = ("--out", "--run-dir", "--workdir")
FILE_FLAGS = ("--report", "--record")


def _readme_outputs() -> list[str]:
    """Every path a README command writes (folders with a trailing slash, as git matches them)."""
    text = (ROOT / "README.md").read_text()
    flags = "|".join(re.escape(f) for f in (*FOLDER_FLAGS, *FILE_FLAGS))
    found = re.findall(rf"({flags})[ =]([\w./-]+)", text)
    return [p + "/" if f in FOLDER_FLAGS else p for f, p in found if p[0].islower()]


def test_readme_outputs_are_ignored_by_git() -> None:
    outputs = _readme_outputs()
    assert {"reports/eval/report.json", "reports/team/episodes.jsonl", "keys/"} <= set(outputs)
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *outputs],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    not_ignored = [
        line.split("\t")[-1] for line in result.stdout.splitlines() if line.startswith("::")
    ]
    assert not_ignored == [], f"README writes outside .gitignore: {not_ignored}"


def test_readme_records_and_reports_survive_the_demo() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    removed = [p.rstrip("/") for line in re.findall(r"rm -rf (.+)", demo) for p in line.split()]
    files = [p for p in _readme_outputs() if not p.endswith("/")]  # --report, --record
    assert "reports/team/episodes.jsonl" in files
    for path in files:
        assert not any(path.startswith(r + "/") for r in removed), f"demo.sh deletes {path}"
