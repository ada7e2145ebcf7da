"""``qmix-sweep``: run a grid of configs x seeds on Ray (and ``qmix-train --seeds``, which is one).

Exit codes: 0 every trial of this call finished (trials left for later by ``--max-trials`` are
not a failure), 1 a trial failed or Ray could not be started, 2 a usage or config error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from qmix_edge.common.cli import guarded
from qmix_edge.envs import EnvError

from .errors import ConfigError
from .sweep import SweepOutcome, SweepSpec, load_sweep_file, read_sweep_spec, run_sweep
from .sweep_report import CURVES_PNG, TABLE_CSV, TABLE_MD

DEFAULT_SWEEPS_DIR = Path("sweeps")

DESCRIPTION = """\
Run many seeds and configurations, each trial an ordinary qmix-train run directory, in parallel as
Ray tasks: on a local Ray started for the sweep (nothing to set up), or on a cluster with
--ray-address. The sweep directory gets a results table (per config: mean ± std and best of the
final and best greedy returns across seeds, time to a target return) and one picture with every
seed's curve per config. Run the same command again to resume a stopped or killed sweep: finished
trials are not rerun and a killed trial continues from its checkpoint.

The sweep file (YAML):
  base:                 # TrainConfig keys shared by every trial
    env: lbforaging:Foraging-8x8-2p-2f-coop-v3
    n_envs: 8
  grid:                 # every combination is one config
    algo: [qmix, vdn]
  seeds: [0, 1, 2]
  total_timesteps: 200000
  target_return: 0.9    # optional
"""

EPILOG = """\
example:
  qmix-sweep sweep.yaml                          # -> sweeps/sweep/
  qmix-sweep sweep.yaml --out sweeps/lbf --ray-address HEAD:6379   # on a cluster
  qmix-sweep sweeps/lbf                          # resume it
  qmix-train --env two_step --seeds 0,1,2 --total-timesteps 5000   # one config, three seeds
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qmix-sweep",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep", type=Path, help="a sweep YAML file, or a sweep directory to resume")
    p.add_argument("--out", type=Path, help="sweep directory (default: sweeps/<file stem>)")
    add_ray_flags(p)
    p.add_argument(
        "--max-trials",
        type=int,
        default=None,
        metavar="K",
        help="run at most K unfinished trials now; run again to continue (default: all)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return p


def add_ray_flags(p: argparse.ArgumentParser | Any) -> None:
    """``--ray-address``, ``--num-cpus``, ``--cpus-per-trial`` (shared with qmix-train --seeds)."""
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="join this Ray cluster (default: start a local Ray on this machine)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all of them)"
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="Ray CPUs each trial reserves (default: %(default)s)",
    )


def execute(
    spec: SweepSpec, out: Path, args: argparse.Namespace, *, prog: str = "qmix-sweep"
) -> int:
    """Run the sweep with the flags in ``args``; print the table and the closing lines."""
    try:
        outcome: SweepOutcome = run_sweep(
            spec,
            out,
            ray_address=args.ray_address,
            num_cpus=args.num_cpus,
            cpus_per_trial=args.cpus_per_trial,
            max_trials=getattr(args, "max_trials", None),
        )
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except EnvError as e:  # Ray missing or not reachable
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    d = outcome.sweep_dir
    print((d / TABLE_MD).read_text(), end="")
    print(
        f"trials: {len(outcome.ran) - len(outcome.failed)} run now, {len(outcome.skipped)} "
        f"finished before, {len(outcome.failed)} failed, {len(outcome.pending)} left for later"
    )
    for name, error in outcome.failed.items():
        print(
            f"{prog}: trial {name} failed: {error} (see {d}/trials/{name}/train.log)",
            file=sys.stderr,
        )
    if outcome.failed or outcome.pending:
        print(f"continue with: qmix-sweep {d}")
    print(f"wrote sweep to {d}/ ({TABLE_MD}, {TABLE_CSV}, {CURVES_PNG}, trials/)")
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; exit codes: 0 done, 2 usage or config error, 1 failure or a bug (whose
    traceback is printed)."""
    return guarded("qmix-sweep", _main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.sweep.is_dir():
            spec = read_sweep_spec(args.sweep)
            out = args.out or args.sweep
        else:
            spec = load_sweep_file(args.sweep)
            out = args.out or DEFAULT_SWEEPS_DIR / args.sweep.stem
    except ConfigError as e:
        print(f"qmix-sweep: error: {e}", file=sys.stderr)
        return 2
    return execute(spec, out, args)


def run_seeds(
    values: dict[str, Any], seeds: list[int], total: int, args: argparse.Namespace
) -> int:
    """``qmix-train --seeds``: the resolved config as a one-config sweep over ``seeds``."""
    base = {k: v for k, v in values.items() if k != "seed"}
    if "seed" in values:
        logging.getLogger(__name__).warning(
            "seed %s does not apply: --seeds %s lists the seeds", values["seed"], seeds
        )
    try:
        spec = SweepSpec(base=base, seeds=tuple(seeds), total_timesteps=total)
    except ConfigError as e:
        print(f"qmix-train: error: {e}", file=sys.stderr)
        return 2
    if args.run_dir is not None:
        out = args.run_dir
    else:
        name = f"{base.get('algo', 'qmix')}-{str(base.get('env', 'env')).split(':')[-1]}"
        out = DEFAULT_SWEEPS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    return execute(spec, out, args, prog="qmix-train")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
