"""Sweeps: many seeds and configurations, each trial an ordinary run directory, in parallel on Ray.

A sweep is a base config, a grid (every combination of the listed values is one *config*), a list
of seeds and a training budget. Each (config, seed) is a *trial*: one `Trainer` run in its own run
directory, executed as one Ray task (one CPU each by default), locally or on a cluster.

    <sweep>/sweep.json                    the resolved sweep (a re-run must match it)
    <sweep>/trials/<config>/s<seed>/      ordinary run directories (qmix-export takes them)
    <sweep>/trials/<config>/s<seed>/result.json   written when the trial finished its budget
    <sweep>/progress.json                 trials done / running / failed, best so far
    <sweep>/results.md, results.csv       the table (see `sweep_report`)
    <sweep>/curves.png                    every seed's greedy-return curve, one panel per config

Resuming is running the same sweep again: a trial with ``result.json`` is not rerun; a trial with a
checkpoint continues from it (the trainer's exact resume, so its results equal an uninterrupted
run's); a trial that died before its first checkpoint starts again. Results per seed equal those of
the same runs done one by one (`run_trial` is exactly what ``qmix-train`` does).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import latest_checkpoint
from .config import TrainConfig, field_names
from .errors import ConfigError
from .run_files import atomic_write_json

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
TRIALS_DIR = "trials"
TRIAL_LOG = "train.log"


@dataclass(frozen=True)
class SweepSpec:
    """What to run: configs (base x grid) x seeds, each for ``total_timesteps`` env steps."""

    base: Mapping[str, Any] = field(default_factory=dict)
    """Config keys shared by every trial (`TrainConfig` fields; not ``seed``)."""
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """Config key -> values; every combination is one config (an empty grid is the base alone)."""
    seeds: Sequence[int] = (0,)
    """The seeds every config runs with."""
    total_timesteps: int = 50_000
    """Env steps per trial."""
    target_return: float | None = None
    """Greedy return whose first crossing the table reports (env steps and seconds); None = none."""

    def __post_init__(self) -> None:
        keys = set(field_names())
        for where, names in (("base", self.base), ("grid", self.grid)):
            unknown = sorted(set(names) - keys)
            if unknown:
                raise ConfigError(
                    f"unknown config key(s) {unknown} in the sweep's {where}; valid keys are: "
                    f"{', '.join(field_names())}"
                )
            if "seed" in names:
                raise ConfigError(
                    f"'seed' does not belong in the sweep's {where}; list them in seeds"
                )
        for k, options in self.grid.items():
            if isinstance(options, str | bytes) or not isinstance(options, Sequence) or not options:
                raise ConfigError(
                    f"grid[{k!r}] must be a non-empty list of values; found {options!r}"
                )
        overlap = sorted(set(self.base) & set(self.grid))
        if overlap:
            raise ConfigError(f"key(s) {overlap} are in both base and grid; keep each in one")
        seeds = list(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError(
                f"seeds must be a non-empty list of non-negative integers; found {seeds}"
            )
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct; found {seeds}")
        if (
            isinstance(self.total_timesteps, bool)
            or not isinstance(self.total_timesteps, int)
            or self.total_timesteps < 1
        ):
            raise ConfigError(
                f"total_timesteps must be a positive integer; found {self.total_timesteps!r}"
            )
        if self.target_return is not None and not math.isfinite(float(self.target_return)):
            raise ConfigError(f"target_return must be a finite number; found {self.target_return}")
        for _, values in self.configs():
            TrainConfig.from_dict({**values, "seed": seeds[0]}, source="sweep")

    def configs(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, config values) for every grid combination, in grid order."""
        keys = list(self.grid)
        out = []
        for i, combo in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            chosen = dict(zip(keys, combo, strict=True))
            label = "_".join(f"{k}-{_slug(v)}" for k, v in chosen.items()) or "base"
            out.append((f"c{i:02d}_{label}", {**self.base, **chosen}))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "seeds": list(self.seeds),
            "total_timesteps": self.total_timesteps,
            "target_return": self.target_return,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "sweep") -> SweepSpec:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in {source}; expected: {', '.join(allowed)}"
            )
        values = dict(d)
        for k in ("base", "grid"):
            if values.get(k) is None:
                values.pop(k, None)
            elif not isinstance(values[k], Mapping):
                raise ConfigError(f"{k} in {source} must be a mapping; found {values[k]!r}")
        if "target_return" in values and values["target_return"] is not None:
            values["target_return"] = float(values["target_return"])
        if "seeds" in values:
            values["seeds"] = (
                tuple(values["seeds"]) if isinstance(values["seeds"], list) else values["seeds"]
            )
        return cls(**values)


def load_sweep_file(path: str | Path) -> SweepSpec:
    """A sweep from YAML: ``base``, ``grid``, ``seeds``, ``total_timesteps``, ``target_return``."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read sweep file {p}: {e.strerror}; check the path") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep file {p} is not valid YAML: {e}") from e
    if not isinstance(data, Mapping):
        raise ConfigError(f"sweep file {p} must hold a mapping; found {type(data).__name__}")
    return SweepSpec.from_dict(data, source=f"sweep file {p}")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-3"`` (inclusive) -> a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError as e:
        raise ConfigError(f"seeds must look like 0,1,2 or 0-3; found {text!r}") from e
    if not seeds:
        raise ConfigError(f"seeds must name at least one seed; found {text!r}")
    return seeds


def _slug(value: Any) -> str:
    text = str(value)
    return "".join(c if c.isalnum() or c in ".+" else "-" for c in text)[:40]


@dataclass(frozen=True)
class Trial:
    """One (config, seed) of a sweep and the run directory it owns."""

    config_name: str
    seed: int
    config: Mapping[str, Any]
    run_dir: str
    total_timesteps: int
    target_return: float | None = None

    @property
    def name(self) -> str:
        return f"{self.config_name}/s{self.seed}"


def trials_of(spec: SweepSpec, sweep_dir: Path) -> list[Trial]:
    """Every trial of the sweep (configs in grid order, seeds in the listed order)."""
    root = Path(sweep_dir).resolve() / TRIALS_DIR
    return [
        Trial(
            name,
            seed,
            {**values, "seed": seed},
            str(root / name / f"s{seed}"),
            spec.total_timesteps,
            spec.target_return,
        )
        for name, values in spec.configs()
        for seed in spec.seeds
    ]


def read_result(trial: Trial) -> dict[str, Any] | None:
    """The trial's ``result.json`` if it finished its budget, else None."""
    path = Path(trial.run_dir) / RESULT_FILE
    try:
        result = dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return result if result.get("env_steps", 0) >= trial.total_timesteps else None


def eval_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """(env step, wall seconds, greedy return mean) of every evaluation in a run's metrics."""
    from .metrics import read_eval_points

    return [(step, t, mean) for step, t, mean, _std in read_eval_points(run_dir)]


def summarize(trial: Trial, train_result: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's result: final and best greedy return, time to target, its curve."""
    curve = eval_curve(Path(trial.run_dir))
    reached = None
    if trial.target_return is not None:
        reached = next((p for p in curve if p[2] >= trial.target_return), None)
    returns = [p[2] for p in curve] or [float(train_result["mean_reward"])]
    return {
        "config": trial.config_name,
        "seed": trial.seed,
        "run_dir": trial.run_dir,
        "final_return": float(train_result["mean_reward"]),
        "final_return_std": float(train_result["std_reward"]),
        "best_return": max(returns),
        "env_steps": int(train_result["env_steps"]),
        "episodes": int(train_result["episodes"]),
        "wall_time_s": float(train_result["wall_time_s"]),
        "target_return": trial.target_return,
        "steps_to_target": None if reached is None else reached[0],
        "seconds_to_target": None if reached is None else reached[1],
        "curve": [list(p) for p in curve],
    }


def run_trial(trial: Trial) -> dict[str, Any]:
    """Run (or resume, or skip) one trial in this process; return its result (see `summarize`).

    This is what a Ray task executes; it is also callable directly (the one-by-one baseline).
    """
    done = read_result(trial)
    if done is not None:
        return done
    from .trainer import Trainer

    run_dir = Path(trial.run_dir)
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to keep
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / TRIAL_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("qmix_edge")
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        config = dict(trial.config)
        if resume:
            trainer = Trainer(run_dir=run_dir, resume=True)
            logger.info("%s: resuming from its checkpoint", trial.name)
        else:
            trainer = Trainer(config=config, run_dir=run_dir)
        out = trainer.train(total_timesteps=trial.total_timesteps)
        result = summarize(trial, out)
        atomic_write_json(run_dir / RESULT_FILE, result)
        return result
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


@dataclass
class SweepOutcome:
    """What a call of `run_sweep` did."""

    sweep_dir: Path
    results: list[dict[str, Any]]
    """Results of every finished trial (this call's and earlier calls'), in trial order."""
    ran: list[str]
    """Names of the trials this call ran (or resumed)."""
    skipped: list[str]
    """Names of the trials already finished before this call."""
    failed: dict[str, str] = field(default_factory=dict)
    """Trial name -> error, for trials that raised."""
    pending: list[str] = field(default_factory=list)
    """Trials not run by this call (``max_trials``); run the sweep again to continue."""

    @property
    def complete(self) -> bool:
        return not self.failed and not self.pending


def prepare_sweep_dir(spec: SweepSpec, sweep_dir: Path) -> None:
    """Write ``sweep.json``, or check that an existing sweep in ``sweep_dir`` is the same sweep."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SWEEP_FILE
    want = spec.to_dict()
    if path.exists():
        have = json.loads(path.read_text())
        if have != json.loads(json.dumps(want)):
            changed = sorted(k for k in want if have.get(k) != json.loads(json.dumps(want[k])))
            raise ConfigError(
                f"{sweep_dir} holds a different sweep (changed: {changed}); resume it unchanged "
                "(qmix-sweep DIR) or write the new sweep to another directory"
            )
        return
    atomic_write_json(path, want)


def read_sweep_spec(sweep_dir: Path) -> SweepSpec:
    """The spec saved in an existing sweep directory (to resume it)."""
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        return SweepSpec.from_dict(json.loads(path.read_text()), source=str(path))
    except FileNotFoundError as e:
        raise ConfigError(f"{sweep_dir} is not a sweep directory ({SWEEP_FILE} missing)") from e


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    *,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: float = 1.0,
    max_trials: int | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run every unfinished trial of ``spec`` as Ray tasks; write the table and the picture.

    Args:
        spec: the sweep.
        sweep_dir: its directory (created; an existing one must hold the same sweep: it resumes).
        ray_address: a Ray cluster to join; None starts a local Ray (see `ray_session`).
        num_cpus: CPUs of a local Ray (default: all of this machine's).
        cpus_per_trial: Ray CPUs each trial asks for (trials beyond the cluster's CPUs queue).
        max_trials: run at most this many unfinished trials in this call (the rest stay pending).
        on_progress: called with the progress record after every finished trial.
    """
    from qmix_edge.envs.ray_session import import_ray, ray_session

    from .sweep_report import write_report

    sweep_dir = Path(sweep_dir).resolve()
    prepare_sweep_dir(spec, sweep_dir)
    trials = trials_of(spec, sweep_dir)
    results: dict[str, dict[str, Any]] = {}
    todo: list[Trial] = []
    for t in trials:
        r = read_result(t)
        if r is None:
            todo.append(t)
        else:
            results[t.name] = r
    skipped = list(results)
    if max_trials is not None:
        todo, later = todo[:max_trials], todo[max_trials:]
    else:
        later = []
    outcome = SweepOutcome(
        sweep_dir, [], [t.name for t in todo], skipped, {}, [t.name for t in later]
    )
    logger.info(
        "sweep %s: %d trials, %d already finished, %d to run%s",
        sweep_dir,
        len(trials),
        len(skipped),
        len(todo),
        f", {len(later)} left for later" if later else "",
    )
    progress = _Progress(sweep_dir, len(trials), results, on_progress)
    if todo:
        ray = import_ray()
        with ray_session(ray_address, num_cpus=num_cpus):
            remote = ray.remote(num_cpus=cpus_per_trial, max_retries=0)(run_trial)
            pending = {remote.remote(t): t for t in todo}
            progress.update(running=len(pending))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                trial = pending.pop(ready[0])
                try:
                    results[trial.name] = ray.get(ready[0])
                except Exception as e:  # the trial's own error, re-raised by Ray
                    cause = getattr(e, "cause", None) or e
                    outcome.failed[trial.name] = f"{type(cause).__name__}: {cause}"
                    logger.error("trial %s failed: %s", trial.name, outcome.failed[trial.name])
                progress.update(running=len(pending), failed=outcome.failed, last=trial.name)
    outcome.results = [results[t.name] for t in trials if t.name in results]
    write_report(spec, sweep_dir, outcome.results, trials)
    return outcome


class _Progress:
    """Trials done, running and failed, and the best so far: logged, written, passed on."""

    def __init__(
        self,
        sweep_dir: Path,
        total: int,
        results: Mapping[str, dict[str, Any]],
        callback: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.path = sweep_dir / PROGRESS_FILE
        self.total = total
        self.results = results
        self.callback = callback
        self.started = time.time()
        self.bar = _bar(total, len(results))

    def update(
        self, *, running: int, failed: Mapping[str, str] | None = None, last: str | None = None
    ) -> None:
        best = max(self.results.values(), key=lambda r: r["final_return"], default=None)
        record = {
            "trials": self.total,
            "done": len(self.results),
            "running": running,
            "failed": dict(failed or {}),
            "elapsed_s": round(time.time() - self.started, 1),
            "best": None
            if best is None
            else {k: best[k] for k in ("config", "seed", "final_return", "best_return")},
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.path, record)
        if last is not None:
            r = self.results.get(last)
            logger.info(
                "trial %s %s (%d/%d done, %d running); best so far: %s",
                last,
                "failed" if r is None else f"finished: final greedy return {r['final_return']:.3f}",
                record["done"],
                self.total,
                running,
                "-"
                if best is None
                else f"{best['final_return']:.3f} ({best['config']} seed {best['seed']})",
            )
            if self.bar is not None:
                self.bar.update(1)
                if best is not None:
                    self.bar.set_postfix(best=f"{best['final_return']:.3f}")
        if self.bar is not None and running == 0:
            self.bar.close()
        if self.callback is not None:
            self.callback(record)


def _bar(total: int, initial: int) -> Any:
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="trial", dynamic_ncols=True)
