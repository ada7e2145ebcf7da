"""``qmix-train``: train a team from the command line (flags generated from `TrainConfig`).

Precedence, lowest to highest: `TrainConfig` defaults < ``--preset`` < the ``--config`` YAML file
< flags.
Exit codes: 0 trained, 2 usage/config error (bad flag, bad value, unknown env, bad run dir),
1 runtime failure or interruption (a checkpoint is written first on Ctrl-C). A run stopped by a
`TrainError` (a NaN or inf from the env, a non-finite loss, a full disk) prints one line, without a
traceback, naming the last good checkpoint and how to continue from it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from qmix_edge.common import settings
from qmix_edge.common.cli import guarded
from qmix_edge.envs import EnvError

from .config import (
    PRESETS,
    RUN_KEYS,
    TrainConfig,
    field_names,
    preset_values,
    read_config_file,
)
from .errors import CheckpointError, ConfigError, TrainError

logger = logging.getLogger("qmix_edge.train.cli")

DESCRIPTION = """\
Train a cooperative team centrally with QMIX (or VDN / independent Q-learning) and write a run
directory: the resolved config, metrics (JSON lines and TensorBoard), a learning-curve PNG and
atomic checkpoints that `qmix-export` turns into one ONNX graph per agent. Environments are
PettingZoo parallel envs ("module:attribute" or a short name such as simple_spread), the QMIX
paper's matrix games, or a Gymnasium id run as a team of independent copies.
"""

EPILOG = """\
example:
  qmix-train --env simple_spread --algo qmix --total-timesteps 200000 --seed 1
  qmix-train --env simple_spread --preset fast --total-timesteps 3000000 --max-seconds 170
  qmix-train --config my.yaml --hidden-dim 128 --run-dir runs/wide
  qmix-train --resume runs/wide --total-timesteps 400000     # continue a stopped run
  qmix-train --env two_step --seeds 0,1,2 --run-dir sweeps/ts  # 3 seeds in parallel on Ray
"""

FIRST_FLAGS = ("algo", "env", "seed")
"""Config fields listed first in ``--help``; the others follow in declaration order."""
DEFAULT_TOTAL_TIMESTEPS = 50_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmix-train",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named set of config values under --config and the flags (fast: the learner for "
        "the batched simple_spread, after JaxMARL's QMIX; epymarl: EPyMARL's QMIX/VDN settings "
        "for lbforaging and rware; see TrainConfig's table)",
    )
    run.add_argument(
        "--config",
        type=Path,
        help="YAML file of config keys, and of total_timesteps and run_dir (one layer; flags win)",
    )
    run.add_argument(
        "--total-timesteps",
        type=int,
        default=None,
        help=f"train until this many env steps in all, earlier sessions of a resumed run "
        f"included (default: {DEFAULT_TOTAL_TIMESTEPS})",
    )
    run.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        metavar="S",
        help="also stop this session after S wall seconds, start-up included (then the final "
        "evaluation and checkpoint run; schedules still span --total-timesteps)",
    )
    run.add_argument(
        "--run-dir", type=Path, help="run directory (default: runs/<algo>-<env>-s<seed>-<time>)"
    )
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint (its saved config is used)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    run.add_argument(
        "--seeds",
        default=None,
        metavar="LIST",
        help="run this config once per seed (e.g. 0,1,2 or 0-3) in parallel on Ray, as a sweep in "
        "--run-dir (see qmix-sweep; needs qmix-edge[ray]); run the same command to resume it",
    )
    from .sweep_cli import add_ray_flags  # the sweep's Ray flags, for --seeds

    add_ray_flags(run)

    names = [*FIRST_FLAGS, *(n for n in field_names() if n not in FIRST_FLAGS)]
    # An unset flag leaves no attribute: resolve_config layers the flags over preset and file.
    settings.add_settings(
        parser,
        TrainConfig,
        names=names,
        suppress_defaults=True,
        title="config (see TrainConfig; flags override --config)",
    )
    return parser


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < preset < YAML file < flags, as a dict of config keys (validated by TrainConfig).

    The file's run keys (`RUN_KEYS`) fill ``args.total_timesteps`` and ``args.run_dir`` where
    no flag set them."""
    values: dict[str, Any] = preset_values(args.preset) if args.preset else {}
    if args.config is not None:
        values.update(read_config_file(args.config))
    run = {k: values.pop(k) for k in RUN_KEYS if k in values}
    if args.total_timesteps is None:
        total = run.get("total_timesteps", DEFAULT_TOTAL_TIMESTEPS)
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise ConfigError(
                f"total_timesteps in {args.config} must be a positive integer; found {total!r}"
            )
        args.total_timesteps = total
    if args.run_dir is None and run.get("run_dir") is not None:
        if not isinstance(run["run_dir"], str):
            raise ConfigError(
                f"run_dir in {args.config} must be a path string; found {run['run_dir']!r}"
            )
        args.run_dir = Path(run["run_dir"])
    values.update({n: getattr(args, n) for n in field_names() if hasattr(args, n)})
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the command; exit codes: 0 done, 2 usage or config error, 1 failure or a bug (whose
    traceback is printed)."""
    return guarded("qmix-train", _main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors and 0 on --help
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.seeds is not None:
        from .sweep import parse_seeds
        from .sweep_cli import run_seeds

        try:
            if args.resume is not None:
                raise ConfigError("--seeds runs a sweep; resume it by running the same command")
            values = resolve_config(args)
            seeds = parse_seeds(args.seeds)
        except ConfigError as e:
            print(f"qmix-train: error: {e}", file=sys.stderr)
            return 2
        return run_seeds(values, seeds, args.total_timesteps, args)
    from .trainer import Trainer  # torch is imported only once the flags are fine

    try:
        values = resolve_config(args)
        if args.resume is not None:
            if args.run_dir is not None and args.run_dir != args.resume:
                raise ConfigError("--resume names the run directory; do not also pass --run-dir")
            trainer = Trainer(config=values, run_dir=args.resume, resume=True)
        else:
            TrainConfig.from_dict(values, source="flag")  # validate before making envs
            trainer = Trainer(config=values, run_dir=args.run_dir)
    except (ConfigError, EnvError, CheckpointError) as e:
        print(f"qmix-train: error: {e}", file=sys.stderr)
        return 2
    if trainer.resume_checkpoint is not None:
        stopped = trainer.stop_record
        why = (
            f" (it had stopped at {stopped.get('env_steps')} env steps: {stopped.get('error')})"
            if stopped
            else ""
        )
        print(
            f"qmix-train: resuming {trainer.run_dir} from the last good checkpoint "
            f"{trainer.resume_checkpoint.name}{why}",
            file=sys.stderr,
        )
    try:
        result = trainer.train(total_timesteps=args.total_timesteps, max_seconds=args.max_seconds)
    except KeyboardInterrupt:
        from .checkpoint import latest_checkpoint

        folder = latest_checkpoint(trainer.run_dir) if trainer.run_dir.is_dir() else None
        if folder is None:
            print("qmix-train: interrupted before the first checkpoint", file=sys.stderr)
        else:
            print(
                f"qmix-train: interrupted; checkpoint saved in {folder} "
                f"(continue with: qmix-train --resume {trainer.run_dir})",
                file=sys.stderr,
            )
        return 1
    except ConfigError as e:
        print(f"qmix-train: error: {e}", file=sys.stderr)
        return 2
    except TrainError as e:
        print(f"qmix-train: error: {e}. {_continue_hint(trainer.run_dir)}", file=sys.stderr)
        return 1
    print(
        f"greedy return {result['mean_reward']:.3f} +- {result['std_reward']:.3f} after "
        f"{result['env_steps']} env steps, {result['episodes']} episodes, {result['updates']} "
        f"updates, {result['wall_time_s']:.1f} s ({result['steps_per_s']:.0f} env steps/s)"
    )
    print(
        f"wrote run to {trainer.run_dir}/ (config.yaml, metrics.jsonl, tb/, learning_curve.png, "
        f"checkpoints/)"
    )
    return 0


def _continue_hint(run_dir: Path) -> str:
    from .checkpoint import latest_checkpoint

    try:
        folder = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    except (CheckpointError, OSError):
        folder = None
    if folder is None:
        return "No checkpoint had been written; start the run again once the cause is fixed"
    return (
        f"The last good checkpoint is {folder}; once the cause is fixed, continue with: "
        f"qmix-train --resume {run_dir}"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
