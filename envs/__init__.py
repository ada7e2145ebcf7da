"""Team environments for qmix-edge: one interface over PettingZoo, matrix games and Gymnasium.

Numpy only (PettingZoo, mpe2 and Gymnasium are imported lazily, when an environment that needs them
is made): training, the coordinator's simulation mode and the reference evaluation all import this
package, and it must never import torch.

Entry points: `make_env` (an id -> a `TeamEnv`; `BUILTIN_ENVS` is the table of short names),
`PettingZooTeamEnv` (the Parallel API adapter), and the vector envs the trainer's collector drives
(`VectorTeamEnv`, `SyncVectorEnv`, `SubprocVectorEnv`, `make_vector_env`; `RayVectorEnv` in
`ray_vector`), and
`BatchedSimpleSpread`, mpe2's simple_spread as one array engine stepping many worlds, and
`VmasVectorEnv` / `VmasTeamEnv`, VMAS scenarios (``vmas:<scenario>``) stepping many worlds in one
call (VMAS and torch are imported only when one is made).
"""

from __future__ import annotations

from .base import TeamEnv
from .batched_mpe import BatchedSimpleSpread, supports_batched_spread
from .errors import EnvError, UnsupportedEnvError
from .make_vector import make_vector_env, supports_batched
from .matrix import MatrixGame, TwoStepGame
from .pettingzoo_env import PettingZooTeamEnv
from .registry import BUILTIN_ENVS, BuiltinEnv, builtin_env_names, make_env
from .spec import AgentSpec, EnvSpec, StepResult, TeamStep
from .subproc_vector import SubprocVectorEnv
from .vector import EnvFactory, SyncVectorEnv, VectorStepResult, VectorTeamEnv
from .vmas_env import VmasTeamEnv, is_vmas_id
from .vmas_vector import VmasVectorEnv

__all__ = [
    "BUILTIN_ENVS",
    "AgentSpec",
    "BatchedSimpleSpread",
    "BuiltinEnv",
    "EnvError",
    "EnvFactory",
    "EnvSpec",
    "MatrixGame",
    "PettingZooTeamEnv",
    "StepResult",
    "SubprocVectorEnv",
    "SyncVectorEnv",
    "TeamEnv",
    "TeamStep",
    "TwoStepGame",
    "UnsupportedEnvError",
    "VectorStepResult",
    "VectorTeamEnv",
    "VmasTeamEnv",
    "VmasVectorEnv",
    "builtin_env_names",
    "is_vmas_id",
    "make_env",
    "make_vector_env",
    "supports_batched",
    "supports_batched_spread",
]
