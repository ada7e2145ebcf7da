"""An example field-mode plug-in pair for qmix-agent: a simulated beacon sensor and a logging actuator.

Run an agent in field mode with it (the coordinator in ``--mode field``):

    qmix-agent --artifacts artifacts/run1 --agent agent_0 --coordinator ground:50051 \\
        --sensor examples.field_plugin:read_sensors --actuator examples.field_plugin:actuate

A real device replaces `read_sensors` with its own sensor fusion (returning the observation vector
the agent was trained on, at its true size) and `actuate` with its motor or flight controller.
This one keeps a little per-agent state: a position that drifts towards a beacon as actions move
it, so the observations change from step to step and the report carries a distance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from qmix_edge.runtime.field import FieldStep, SensorReading

# Environment variable naming a JSONL file the actuator appends to (used by the tests).
ACTION_LOG_ENV = "QMIX_EDGE_EXAMPLE_ACTION_LOG"


@dataclass
class _Device:
    """The simulated device of one agent."""

    position: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.float32))
    beacon: np.ndarray = field(default_factory=lambda: np.array([1.0, -0.5], dtype=np.float32))


_DEVICES: dict[str, _Device] = {}
_MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float32) * 0.1


def read_sensors(ctx: FieldStep) -> SensorReading:
    """The agent's observation: offset to the beacon and position, padded/cut to obs_dim."""
    dev = _DEVICES.setdefault(ctx.agent_id, _Device())
    features = np.concatenate([dev.beacon - dev.position, dev.position])  # (4,)
    obs = np.zeros(ctx.obs_dim, dtype=np.float32)  # (obs_dim,)
    n = min(ctx.obs_dim, features.size)
    obs[:n] = features[:n]
    distance = float(np.linalg.norm(dev.beacon - dev.position))
    return SensorReading(obs=obs, mask=None, report={"distance": distance})


def actuate(ctx: FieldStep, action: int) -> None:
    """Move the simulated device; append what was done to $QMIX_EDGE_EXAMPLE_ACTION_LOG if set."""
    dev = _DEVICES.setdefault(ctx.agent_id, _Device())
    if not ctx.is_fallback:
        dev.position = dev.position + _MOVES[action % len(_MOVES)]
    path = os.environ.get(ACTION_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(
                json.dumps(
                    {
                        "agent_id": ctx.agent_id,
                        "episode_id": ctx.episode_id,
                        "step": ctx.step,
                        "action": action,
                        "fallback": ctx.is_fallback,
                    }
                )
                + "\n"
            )


GEOFENCE = 1.0
"""Half the side of the square the simulated device must stay in."""


def geofence(ctx: FieldStep, reading: SensorReading) -> np.ndarray:
    """A safety plug-in (``--safety examples.field_plugin:geofence``): forbid the moves that would
    take the device out of the square |x|, |y| <= GEOFENCE (staying put is always allowed)."""
    dev = _DEVICES.setdefault(ctx.agent_id, _Device())
    allowed = np.ones(ctx.n_actions, dtype=bool)  # (n_actions,)
    for a in range(min(ctx.n_actions, len(_MOVES))):
        allowed[a] = bool(np.all(np.abs(dev.position + _MOVES[a]) <= GEOFENCE + 1e-6))
    return allowed
