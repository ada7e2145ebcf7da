"""Team environments for qmix-edge: one interface over PettingZoo, matrix games and Gymnasium.

Numpy only (PettingZoo, mpe2 and Gymnasium are imported lazily, when an environment that needs them
is made): training, the coordinator's simulation mode and the reference evaluation all import this
package, and it must never import torch.
"""

from __future__ import annotations

from .base import TeamEnv
from .errors import EnvError, UnsupportedEnvError
from .matrix import MatrixGame, TwoStepGame
from .spec import AgentSpec, EnvSpec, StepResult, TeamStep

__all__ = [
    "AgentSpec",
    "EnvError",
    "EnvSpec",
    "MatrixGame",
    "StepResult",
    "TeamEnv",
    "TeamStep",
    "TwoStepGame",
    "UnsupportedEnvError",
]
