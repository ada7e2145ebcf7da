"""Field-mode plug-ins: how qmix-agent reads a real device's sensors and drives its actuators.

Owns the plug-in contract. Both plug-ins are named ``module:callable`` on the command line
(``--sensor mypkg.drone:read_obs --actuator mypkg.drone:apply``) and called once per step:

    sensor(ctx: FieldStep) -> numpy array (obs_dim,) | SensorReading
    actuator(ctx: FieldStep, action: int) -> None

``ctx.is_fallback`` tells the actuator that the action is the agent's fallback (the coordinator went
quiet, or the sensor failed), not a decision. An exception in the sensor makes that step's action
the fallback; an exception in the actuator is logged and reported. See examples/field_plugin.py.
No torch here.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RuntimeFailure


@dataclass(frozen=True)
class FieldStep:
    """What a plug-in is told about the step it serves."""

    agent_id: str
    """The agent this process runs."""
    obs_dim: int
    """Observation length the network expects."""
    n_actions: int
    """Number of actions."""
    episode_id: int
    """Coordinator episode id (0 while the watchdog holds the fallback)."""
    step: int
    """Step within the episode."""
    is_fallback: bool = False
    """True when the action passed to the actuator is the fallback, not a decision."""


@dataclass(frozen=True)
class SensorReading:
    """A sensor plug-in's full answer: observation, optional mask, optional report."""

    obs: np.ndarray
    """float32 (obs_dim,): the agent's own observation."""
    mask: np.ndarray | None = None
    """bool (n_actions,): allowed actions; None = all allowed."""
    report: Mapping[str, float] = field(default_factory=dict)
    """Named readings sent to the coordinator with this step's reply (battery, reward, ...)."""
    time: float | None = None
    """When the observation was measured, on ``time.monotonic()``'s clock; None = now. The
    autonomous loop holds the fallback when a reading is older than its staleness limit."""
    episode_over: bool = False
    """The device says its episode is over (landed, reached the goal): the autonomous loop ends
    the episode after this step."""


Sensor = Callable[[FieldStep], "np.ndarray | SensorReading"]
Actuator = Callable[[FieldStep, int], None]
Safety = Callable[[FieldStep, "SensorReading"], "np.ndarray | None"]
"""The optional safety plug-in: a bool (n_actions,) mask of the actions local sensors allow
(geofence, obstacle), ANDed with the env mask before the graph's masked argmax; None = no limit."""


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:callable`` (dots allowed in the attribute path). The module is looked for
    on the import path and then, as ``python -m`` would, in the current directory (an installed
    command such as ``qmix-agent`` does not put it on the path)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RuntimeFailure(f"expected a plug-in as 'module:callable'; found {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name is None or not module_name.startswith(e.name) or cwd in sys.path:
            raise RuntimeFailure(
                f"cannot import plug-in module {module_name!r} ({e}); check PYTHONPATH"
            ) from e
        sys.path.append(cwd)
        try:
            obj = importlib.import_module(module_name)
        except ImportError as e2:
            raise RuntimeFailure(
                f"cannot import plug-in module {module_name!r} from the import path nor from "
                f"{cwd} ({e2}); check PYTHONPATH"
            ) from e2
    except ImportError as e:
        raise RuntimeFailure(
            f"cannot import plug-in module {module_name!r} ({e}); check PYTHONPATH"
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise RuntimeFailure(f"module {module_name!r} has no attribute {attr!r}") from e
    if not callable(obj):
        raise RuntimeFailure(f"plug-in {spec!r} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def as_reading(value: Any, obs_dim: int, n_actions: int) -> SensorReading:
    """Check a sensor's return value and normalise it to a `SensorReading` (float32, bool)."""
    reading = value if isinstance(value, SensorReading) else SensorReading(obs=np.asarray(value))
    obs = np.asarray(reading.obs, dtype=np.float32).reshape(-1)
    if obs.shape != (obs_dim,):
        raise RuntimeFailure(
            f"sensor returned an observation of shape {obs.shape}; expected ({obs_dim},)"
        )
    if not np.isfinite(obs).all():
        raise RuntimeFailure("sensor returned a non-finite observation (NaN or inf)")
    mask = None
    if reading.mask is not None:
        mask = np.asarray(reading.mask, dtype=bool).reshape(-1)
        if mask.shape != (n_actions,) or not mask.any():
            raise RuntimeFailure(
                f"sensor returned a mask of shape {mask.shape} with {int(mask.sum())} allowed "
                f"actions; expected ({n_actions},) with at least one allowed"
            )
    return SensorReading(
        obs=obs,
        mask=mask,
        report={k: float(v) for k, v in reading.report.items()},
        time=None if reading.time is None else float(reading.time),
        episode_over=bool(reading.episode_over),
    )
