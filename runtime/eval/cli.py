"""qmix-eval: simulated multi-device evaluation, with a single-process reference and fault plans.

`evaluate` is the whole evaluation as a library call and `main` the command around it. The rooms
it uses: the processes (`launcher`: one ``qmix-coordinator`` and one ``qmix-agent`` OS process per
agent on loopback, port 0, each in its own network namespace with ``--netns``; faults injected and
killed processes restarted as the plan says), the in-process reference (`reference`: the same
artifacts in one process, same env, same per-episode seeds), and the report (`report`: JSON, a
human summary, a PNG beside it, comparing the two episode by episode and listing latency
percentiles, decision times, fallbacks, late replies and rejoins from the coordinator's run record).

With no faults every episode's distributed return equals its reference return exactly: the agents
run the same ONNX graphs on bit-identical float32 inputs.

Fault plan (``--faults PLAN``: inline JSON when the value starts with ``[`` or ``{``, of any length,
else the path of a JSON file; team steps count from 0 over the whole run):

    [{"kind": "kill", "agent": "agent_0", "at_step": 5, "restart_after_ms": 300},
     {"kind": "stall", "agent": "agent_1", "at_step": 12, "duration_ms": 600},
     {"kind": "drop", "agent": "agent_1", "fraction": 0.2, "seed": 0},
     {"kind": "restart_coordinator", "at_step": 20, "restart_after_ms": 200}]

Security: with ``--tls-ca/--tls-cert/--tls-key`` the coordinator serves TLS; with
``--tls-agent-certs DIR`` (``<agent_id>.pem`` and ``<agent_id>.key`` per agent) it requires mutual
TLS; with ``--tokens FILE`` every agent gets its own bearer token (through a 0600 file).

Exit codes: 0 the evaluation ran and its report was written; 2 a usage or configuration error
(bad flags, artifacts, fault plan, TLS files, no namespaces), said in one line before anything
starts; 1 the evaluation failed (a child failed, the time ran out), said in one line that quotes
the child's own error. Anything else is a bug and ends with its traceback (exit 1).

No torch here (the picture's matplotlib is imported lazily, skipped with a note if absent).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qmix_edge.common import settings
from qmix_edge.envs.errors import EnvError

from ..artifact import ArtifactError, Manifest
from ..errors import RuntimeFailure
from ..netns import NetnsTopology, netns_unavailable
from ..policy import PolicyError
from ..records import read_records
from .config import GROUPS as CONFIG_GROUPS
from .config import EvalConfig
from .faults import check_fault_plan
from .field_report import field_summary_text
from .launcher import RECORD_FILE, run_distributed
from .reference import run_reference
from .report import build_report, summary_text, write_report

log = logging.getLogger(__name__)

CONFIG_ERRORS = (RuntimeFailure, ArtifactError, OSError)
"""What a bad configuration raises before anything starts (exit 2)."""
RUN_ERRORS = (RuntimeFailure, ArtifactError, PolicyError, EnvError, OSError)
"""What an evaluation that could not complete raises (exit 1, one line); anything else is a bug."""


def evaluate(cfg: EvalConfig, workdir: Path | None = None) -> dict[str, Any]:
    """Run the distributed evaluation and the reference; write the report; return it."""
    agent_ids = list(Manifest.load(cfg.artifacts).agent_ids)
    # Without --workdir the records and logs live in a temporary folder, removed after a run
    # that succeeded and kept (and named) after one that failed.
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="qmix-eval-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if cfg.netns:
            with NetnsTopology(agent_ids, rate=cfg.netns_rate) as topology:
                facts = run_distributed(cfg, agent_ids, workdir, topology)
        else:
            facts = run_distributed(cfg, agent_ids, workdir)
        records = list(read_records(workdir / RECORD_FILE))
        reference = run_reference(cfg, agent_ids)
    except BaseException:
        log.error("the failed run's records and logs are kept in %s", workdir)
        raise
    report = build_report(cfg, agent_ids, records, reference, facts)
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
        report["process"]["record"] = None  # removed with the work folder (keep it: --workdir)
    report["workdir"] = None if own else str(workdir)
    write_report(report, records, cfg.report)
    return report


def evaluate_field_run(cfg: EvalConfig) -> dict[str, Any]:
    """``--field``: the scenarios and the reference (`field_eval.evaluate_field`), with the work
    folder kept (``--workdir``) or temporary as for a lockstep evaluation."""
    from .field_eval import evaluate_field

    own = cfg.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="qmix-eval-field-")) if own else cfg.workdir
    assert workdir is not None
    try:
        report = evaluate_field(cfg, workdir)
    except BaseException:
        log.error("the failed run's records and logs are kept in %s", workdir)
        raise
    if own:
        shutil.rmtree(workdir, ignore_errors=True)
        report["workdir"] = None
    return report


def check_config(cfg: EvalConfig) -> None:
    """Everything that can be known wrong before a process starts: the artifacts, the fault plan
    against the team, the TLS and token files, namespaces with ``--netns``."""
    agent_ids = Manifest.load(cfg.artifacts).agent_ids
    check_fault_plan(cfg.faults, agent_ids)
    cfg.security.check(agent_ids)
    if cfg.netns and (why := netns_unavailable()) is not None:
        raise RuntimeFailure(f"--netns: {why}")


DESCRIPTION = """\
Evaluate exported agents as a team of separate processes: a coordinator and one
qmix-agent per agent on loopback, optional injected faults, and the same artifacts
run in one process as the reference. Without faults every episode's return must
equal the reference's.

examples:
  qmix-eval --artifacts artifacts/run1 --env two_step --episodes 20 --seed 0 \\
      --report reports/run1/report.json --faults '[{"kind": "kill", "agent": "agent_0", "at_step": 5}]'
  qmix-eval --artifacts artifacts/run1 --field --episodes 6 --report reports/run1/field.json

--field evaluates the team as it flies: mission control, every agent on its own clock
against a real-time simulator, with a lossy link and with mission control killed.

exit status: 0 the report was written; 2 a usage or configuration error; 1 the
evaluation failed (the message quotes the failing process's own error line).
"""


def build_parser() -> argparse.ArgumentParser:
    """qmix-eval's flags: the fields of `EvalConfig`."""
    return settings.build_parser(EvalConfig, "qmix-eval", DESCRIPTION, titles=CONFIG_GROUPS)


def main(argv: Sequence[str] | None = None) -> int:
    """qmix-eval; returns its exit code (see the module's docstring)."""
    try:
        cfg, _ = settings.parse(EvalConfig, build_parser(), argv)
    except SystemExit as e:  # a usage error (2) or --help (0)
        return int(e.code or 0)
    logging.basicConfig(level=cfg.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_config(cfg)
    except CONFIG_ERRORS as e:
        log.error("%s: %s", type(e).__name__, e)
        return 2
    try:
        report = evaluate_field_run(cfg) if cfg.field else evaluate(cfg, cfg.workdir)
    except RUN_ERRORS as e:
        log.error("evaluation failed: %s: %s", type(e).__name__, e)
        return 1
    text = field_summary_text(report) if cfg.field else summary_text(report)
    sys.stdout.write(text + "\n")
    sys.stdout.write(f"{report['picture_note']}\nreport written to {cfg.report}\n")
    return 0
