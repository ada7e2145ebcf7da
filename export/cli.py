"""``qmix-export``: turn a training run into a device artifact (one ONNX graph per agent).

Exit codes: 0 written, 2 usage or configuration error (bad flags, unknown run, existing output),
1 export failure (the parity gate or the exporter failed; nothing that looks good is left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from qmix_edge.common.cli import guarded
from qmix_edge.runtime.artifact import SIGNATURE_FILE, ArtifactError, Manifest
from qmix_edge.runtime.tensors import MANIFEST_FILE

from .errors import ExportConfigError, ExportError
from .variants import VARIANT_PRECISIONS

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Export a qmix-train run as a device artifact: one self-contained <agent_id>.onnx per agent (its own
weights only; no mixer, no global state), manifest.json with sizes, hashes and the parity gate's
figures, and optionally a signature and reduced-precision variants. torch and onnxruntime must agree
on recorded trajectories before anything is written.

example:
  qmix-export runs/spread --out artifacts/spread --sign keys/qmix-signing.key --quantize int8
  qmix-export keygen --out keys          # make an Ed25519 key pair for --sign
"""


def _export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qmix-export",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory qmix-train wrote")
    p.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="best (the run's best greedy evaluation), last (the latest checkpoint), or a checkpoint "
        "folder or name inside the run (default: best, or last for a run that has no best)",
    )
    p.add_argument(
        "--sign",
        metavar="KEY",
        default=None,
        help="Ed25519 private key (PEM) to sign manifest.json with (writes manifest.sig)",
    )
    p.add_argument(
        "--quantize",
        action="append",
        default=[],
        choices=VARIANT_PRECISIONS,
        help="also write a reduced-precision variant (repeatable); fp32 stays the default",
    )
    p.add_argument(
        "--fallback-action",
        action="append",
        default=[],
        metavar="[AGENT=]ACTION",
        help="action applied when a decision misses its deadline: one int for every agent or "
        "AGENT=ACTION (repeatable); default 0 (the no-op in PettingZoo MPE)",
    )
    p.add_argument(
        "--no-env",
        action="store_true",
        help="record the parity trajectories from synthetic inputs only (default: also roll out "
        "the run's environment)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the parity recording (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing artifact at --out")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def _keygen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qmix-export keygen",
        description="Make an Ed25519 key pair for signing artifacts: qmix-signing.key (private, "
        "mode 0600, keep it on the workstation) and qmix-signing.pub (copy it to devices).\n\n"
        "example:\n  qmix-export keygen --out keys",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the key pair to")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    return p


def _parse_fallback(values: list[str]) -> int | dict[str, int] | None:
    if not values:
        return None
    default: int | None = None
    per_agent: dict[str, int] = {}
    for v in values:
        agent, sep, action = v.rpartition("=")
        try:
            number = int(action)
        except ValueError as e:
            raise ExportConfigError(
                f"--fallback-action expects ACTION or AGENT=ACTION with an integer action; "
                f"found {v!r}"
            ) from e
        if sep:
            per_agent[agent] = number
        else:
            default = number
    if default is not None and not per_agent:
        return default
    if default is not None:
        raise ExportConfigError(
            "--fallback-action: give either one action for all agents or AGENT=ACTION pairs"
        )
    return per_agent


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    pkg = logging.getLogger("qmix_edge")
    pkg.addHandler(handler)
    pkg.setLevel(logging.WARNING if quiet else logging.INFO)
    pkg.propagate = False  # onnxruntime.quantization configures the root logger
    logging.getLogger("qmix_edge.runtime").setLevel(logging.WARNING)  # the self-check's loads
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _keygen(argv: list[str]) -> int:
    from .signing import generate_keypair

    try:
        args = _keygen_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        priv, pub = generate_keypair(args.out, force=args.force)
    except ExportConfigError as e:
        print(f"qmix-export keygen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"qmix-export keygen: error: cannot write the key pair: {e}", file=sys.stderr)
        return 1
    print(f"wrote private key {priv} (keep it secret) and public key {pub} (copy to devices)")
    return 0


def _summary(manifest: Manifest, out: Path) -> str:
    lines = []
    for a in manifest.agents:
        p = a.parity
        lines.append(
            f"  {a.agent_id}: {a.file} {a.size_bytes / 1024:.1f} KiB, obs {a.obs_dim}, "
            f"actions {a.n_actions}, {'gru' if a.recurrent else 'mlp'}, parity max |dQ| "
            f"{p.max_abs_q_diff:.2e} over {p.n_steps} steps ({p.n_episodes} episodes, "
            f"{'+'.join(p.sources)}), near-ties {p.near_ties}"
        )
        for v in a.variants:
            lines.append(
                f"    {v.precision}: {v.file} {v.size_bytes / 1024:.1f} KiB, action agreement "
                f"with fp32 {v.action_agreement:.2%} on {v.n_steps} steps, max |dQ| "
                f"{v.max_abs_q_diff:.2e}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command; exit codes: 0 done, 2 usage or config error, 1 failure or a bug (whose
    traceback is printed)."""
    return guarded("qmix-export", _main, argv)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "keygen":
        return _keygen(argv[1:])
    try:
        args = _export_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    _setup_logging(args.quiet)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        from .exporter import export_run
    except ModuleNotFoundError as e:
        print(
            f"qmix-export: error: {e.name} is missing; the exporter needs the training extra: "
            "pip install 'qmix-edge[train]'",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    progress = sys.stderr.isatty() and not args.quiet
    try:
        fallback = _parse_fallback(args.fallback_action)
        # log lines print above the progress bar instead of through it
        redirect = (
            logging_redirect_tqdm(loggers=[logging.getLogger("qmix_edge")])
            if progress
            else contextlib.nullcontext()
        )
        with redirect:
            manifest = export_run(
                args.run_dir,
                out,
                args.checkpoint,
                use_env=not args.no_env,
                fallback_actions=fallback,
                quantize=args.quantize,
                sign_key=args.sign,
                overwrite=args.force,
                seed=args.seed,
                progress=progress,
            )
    except ExportConfigError as e:
        print(f"qmix-export: error: {e}", file=sys.stderr)
        return 2
    except (ExportError, ArtifactError) as e:
        print(f"qmix-export: export failed: {e}", file=sys.stderr)
        print(f"nothing was written to {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qmix-export: interrupted; nothing was written to {out}", file=sys.stderr)
        return 1
    print(_summary(manifest, out))
    files = [a.file for a in manifest.agents] + [
        v.file for a in manifest.agents for v in a.variants
    ]
    signed = f" and {SIGNATURE_FILE}" if args.sign else ""
    print(
        f"wrote artifact {out}: {MANIFEST_FILE}{signed} and {len(files)} graphs "
        f"({', '.join(files)}) for run {manifest.run_id} at step {manifest.step}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
