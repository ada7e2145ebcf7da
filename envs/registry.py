"""`make_env`: one environment id in, one `TeamEnv` out, and the visible table of built-in names.

An id is resolved in this order (the first form that matches wins):

1. ``"vmas:<scenario>"`` (or ``"vmas:<module>:<Class>"``) — a VMAS scenario, one world of it (see
   `vmas_env`; VMAS and torch are imported only then, from the ``vmas`` extra).
2. ``"module:attribute"`` — ``attribute`` is a callable returning a PettingZoo ``ParallelEnv`` (a
   factory or a class), or a module exposing ``parallel_env`` (mpe2's ``simple_spread_v3`` is such a
   module). A callable may also return a ready `TeamEnv`, which is used as is.
3. A built-in short name from `BUILTIN_ENVS` (below): aliases of mpe2 scenarios, the QMIX paper's
   matrix games, and the small toy envs the tests use.
4. A Gymnasium id: a multi-agent env in EPyMARL's convention (Tuple spaces, e.g. lbforaging and
   rware; see `gym_multiagent`) is a team of its own agents; a single-agent env (e.g.
   ``CartPole-v1``) runs as ``n_agents`` independent copies (see `gym_team`).
   Gymnasium's ``"module:EnvId-v0"`` form (the part after ``:`` is not a Python name) imports the
   module, which registers the id, and is then a Gymnasium id.

The matrix games are exact tables: their team reward is the payoff itself (``team_reward`` does
not apply) and they take no ``env_kwargs``.

``n_agents`` is the team size where the env has one to choose: it is passed as the factory's ``N`` /
``n_agents`` / ``num_agents`` keyword when the factory (or its module's ``raw_env``) takes one and
``env_kwargs`` does not set it, it is a VMAS scenario's ``n_agents``, and it is the number of
Gymnasium copies. Envs with a fixed team
(simple_speaker_listener, the matrix games) keep their own size; the spec always says what it is.

Numpy only; PettingZoo, mpe2, Gymnasium and VMAS are imported on demand, and a missing one is
reported with the extra to install.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import TeamEnv
from .errors import EnvError, UnsupportedEnvError, did_you_mean
from .matrix import PENALTY_PAYOFF, MatrixGame, TwoStepGame
from .pettingzoo_env import TEAM_REWARDS, PettingZooTeamEnv, TeamReward
from .sim_import import INSTALL_HINT, import_sim_module
from .vmas_env import VmasTeamEnv, is_vmas_id

logger = logging.getLogger(__name__)

_TEAM_SIZE_KWARGS = ("N", "n_agents", "num_agents")
_ACCEPTED_FORMS = (
    "accepted forms: 'module:attribute' (a ParallelEnv factory or a module with parallel_env, e.g. "
    "'mpe2:simple_spread_v3'), a built-in name ({builtins}), 'vmas:<scenario>' (e.g. "
    "'vmas:balance'), or a Gymnasium id (e.g. 'CartPole-v1')"
)

BuiltinBuilder = Callable[[int, dict[str, Any]], TeamEnv]


@dataclass(frozen=True)
class BuiltinEnv:
    """One row of the built-in table."""

    name: str
    """The short name users write, e.g. ``simple_spread``."""
    target: str | BuiltinBuilder
    """A ``module:attribute`` id it stands for, or a builder ``(n_agents, env_kwargs) -> TeamEnv``."""
    description: str
    """One line for listings and error messages."""


def _two_step(n_agents: int, kwargs: dict[str, Any]) -> TeamEnv:
    _no_kwargs("two_step", kwargs)
    return TwoStepGame("two_step")


def _penalty(n_agents: int, kwargs: dict[str, Any]) -> TeamEnv:
    _no_kwargs("penalty", kwargs)
    return MatrixGame(PENALTY_PAYOFF, env_id="penalty")


def _no_kwargs(name: str, kwargs: Mapping[str, Any]) -> None:
    if kwargs:
        raise EnvError(f"{name!r} takes no env_kwargs; found {sorted(kwargs)}")


BUILTIN_ENVS: dict[str, BuiltinEnv] = {
    e.name: e
    for e in (
        BuiltinEnv(
            "simple_spread",
            "mpe2:simple_spread_v3",
            "mpe2 cooperative navigation: N agents cover N landmarks (N = n_agents), 25 steps",
        ),
        BuiltinEnv(
            "simple_speaker_listener",
            "mpe2:simple_speaker_listener_v4",
            "mpe2 speaker (obs 3, 3 actions) guides a listener (obs 11, 5 actions): heterogeneous",
        ),
        BuiltinEnv(
            "simple_reference",
            "mpe2:simple_reference_v3",
            "mpe2 two agents each guide the other to a landmark (50 discrete actions)",
        ),
        BuiltinEnv(
            "two_step",
            _two_step,
            "QMIX paper's two-step game (2 agents): optimum 8, VDN settles for 7",
        ),
        BuiltinEnv(
            "penalty",
            _penalty,
            "non-monotonic one-step 3x3 matrix game (QTRAN Table 1a, 2 agents): optimum 8",
        ),
        BuiltinEnv(
            "masked_choice",
            "qmix_edge.envs.toy:MaskedChoiceEnv",
            "toy: pick your target among masked actions (dict obs with action_mask)",
        ),
        BuiltinEnv(
            "masked_noop",
            "qmix_edge.envs.toy:MaskedNoopEnv",
            "toy: masked_choice whose no-op action 0 (the default fallback) is masked on a schedule",
        ),
        BuiltinEnv(
            "leaving_agents",
            "qmix_edge.envs.toy:LeavingAgentsEnv",
            "toy: agents leave the episode at different steps (removed from env.agents)",
        ),
        BuiltinEnv(
            "speaker_pair",
            "qmix_edge.envs.toy:SpeakerPairEnv",
            "toy: heterogeneous speaker (obs 3, 3 actions) and listener (obs 4, 5 actions)",
        ),
    )
}
"""Short names -> what they stand for. The one registry of environments; nothing registers itself."""


def builtin_env_names() -> tuple[str, ...]:
    """The short names `make_env` accepts besides ``module:attribute`` and Gymnasium ids."""
    return tuple(BUILTIN_ENVS)


_VERSIONED = re.compile(r"_v\d+$")


def _env_entry_points(module: types.ModuleType) -> list[str]:
    """What could follow ``module:`` in an env id: its public submodules (found on disk, not
    imported) and the public callables it defines. PettingZoo's versioned names (``simple_spread_v3``) alone when
    the package follows that convention, so mpe2 lists its scenarios, not its helpers."""
    names = {
        m.name
        for m in pkgutil.iter_modules(getattr(module, "__path__", None) or [])
        if not m.name.startswith("_")
    }
    for n in dir(module):
        value = getattr(module, n, None)
        if n.startswith("_") or isinstance(value, types.ModuleType) or not callable(value):
            continue
        if not str(getattr(value, "__module__", "")).startswith(module.__name__):
            continue  # imported helpers (typing.Any, numpy ...) are not this module's envs
        names.add(n)
    versioned = sorted(n for n in names if _VERSIONED.search(n))
    return versioned or sorted(names)


def _team_size_kwarg(factory: Callable[..., Any], module: types.ModuleType | None) -> str | None:
    """The factory's team-size keyword (``N``, ``n_agents``, ``num_agents``), if it has one."""
    candidates: list[Any] = [factory]
    if module is not None:
        candidates += [getattr(module, name, None) for name in ("raw_env", "env")]
    for fn in candidates:
        if fn is None:
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        for name in _TEAM_SIZE_KWARGS:
            if name in params:
                return name
    return None


def _from_entry_point(
    env_id: str,
    target: str,
    *,
    n_agents: int,
    team_reward: TeamReward,
    episode_limit: int | None,
    env_kwargs: dict[str, Any],
) -> TeamEnv:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise EnvError(f"expected 'module:attribute'; found {target!r}")
    module = import_sim_module(module_name)
    obj = getattr(module, attr, None)
    if obj is None and getattr(module, "__path__", None) is not None:
        # A package's submodule (mpe2:simple_spread_v3) is not an attribute until imported.
        try:
            obj = importlib.import_module(f"{module_name}.{attr}")
        except ModuleNotFoundError as e:
            if e.name != f"{module_name}.{attr}":
                obj = import_sim_module(f"{module_name}.{attr}")  # re-raise with the install hint
    if obj is None:
        offered = _env_entry_points(module)
        shown = offered[:30] + (["..."] if len(offered) > 30 else [])
        raise EnvError(
            f"module {module_name!r} has no attribute or submodule {attr!r}."
            + did_you_mean(attr, offered)
            + f" Its env modules and factories: {', '.join(shown) or '(none)'}"
        )
    owner: types.ModuleType | None = None
    if isinstance(obj, types.ModuleType):
        owner = obj
        factory = getattr(obj, "parallel_env", None)
        if factory is None:
            aec = hasattr(obj, "env") or hasattr(obj, "raw_env")
            raise UnsupportedEnvError(
                f"{target!r}: module {obj.__name__!r} has no parallel_env"
                + (" (it only offers the AEC API: env/raw_env)" if aec else "")
                + "; supported: PettingZoo Parallel API envs. Wrap an AEC env with "
                "pettingzoo.utils.conversions.aec_to_parallel in a factory of your own."
            )
    elif callable(obj):
        factory = obj
        owner = module
    else:
        raise EnvError(
            f"{target!r}: expected a ParallelEnv factory or a module with parallel_env; found "
            f"{type(obj).__name__}"
        )
    kwargs = dict(env_kwargs)
    size_kw = _team_size_kwarg(factory, owner)
    if size_kw is not None and size_kw not in kwargs:
        kwargs[size_kw] = n_agents
    try:
        env = factory(**kwargs)
    except TypeError as e:
        raise EnvError(f"{target!r} rejected env_kwargs {kwargs}: {e}") from e
    if isinstance(env, TeamEnv):
        return env
    team = PettingZooTeamEnv(
        env, env_id=env_id, team_reward=team_reward, episode_limit=episode_limit, env_kwargs=kwargs
    )
    if size_kw is None and team.spec.n_agents != n_agents:
        logger.info(
            "%s has a fixed team of %d agents; n_agents=%d does not apply",
            env_id,
            team.spec.n_agents,
            n_agents,
        )
    return team


def _gymnasium_ids() -> Any:
    gym = import_sim_module("gymnasium")
    return gym.envs.registry


def make_env(
    env_id: str,
    *,
    n_agents: int = 3,
    team_reward: TeamReward = "sum",
    episode_limit: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> TeamEnv:
    """Make a team environment from an id (see the module docstring for the resolution order).

    Args:
        env_id: ``vmas:<scenario>``, ``module:attribute``, a built-in short name, or a Gymnasium id.
        n_agents: team size where the env lets us choose it (see the module docstring).
        team_reward: ``"sum"`` (default) or ``"mean"`` of the agents' rewards per step.
        episode_limit: max env steps per episode; required when the env declares none, and capped
            at the env's own limit when it does. Reaching it truncates the episode.
        env_kwargs: keyword arguments for the env's factory.

    Raises:
        EnvError: unknown id, a missing simulation package, bad arguments.
        UnsupportedEnvError: the env exists but has continuous or non-discrete actions, non-flat
            observations, or only the AEC API.
    """
    if not isinstance(env_id, str) or not env_id.strip():
        raise EnvError(f"expected an env id string; found {env_id!r}")
    if team_reward not in TEAM_REWARDS:
        raise EnvError(f"team_reward must be one of {TEAM_REWARDS}; found {team_reward!r}")
    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 1:
        raise EnvError(f"n_agents must be a positive integer; found {n_agents!r}")
    kwargs = dict(env_kwargs or {})
    common: dict[str, Any] = {
        "n_agents": n_agents,
        "team_reward": team_reward,
        "episode_limit": episode_limit,
        "env_kwargs": kwargs,
    }

    if is_vmas_id(env_id):
        return VmasTeamEnv(env_id, **common)
    if ":" in env_id:
        module_name, _, attr = env_id.partition(":")
        if attr and not attr.isidentifier():
            # Gymnasium's own "module:Env-v0" form: importing the module registers the id.
            import_sim_module(module_name)
            if attr in _gymnasium_ids():
                from .gym_multiagent import make_gymnasium_team

                return make_gymnasium_team(attr, env_id=env_id, **common)
            raise EnvError(
                f"{attr!r} is not a Python attribute name, so {env_id!r} was read as Gymnasium's "
                f"'module:EnvId' form, but importing {module_name!r} did not register {attr!r}. "
                + _ACCEPTED_FORMS.format(builtins=", ".join(BUILTIN_ENVS))
            )
        return _from_entry_point(env_id, env_id, **common)

    builtin = BUILTIN_ENVS.get(env_id)
    if builtin is not None:
        if isinstance(builtin.target, str):
            return _from_entry_point(env_id, builtin.target, **common)
        return builtin.target(n_agents, kwargs)

    tried = ["module:attribute (no ':' in the id)", f"built-in names {list(BUILTIN_ENVS)}"]
    try:
        registry = _gymnasium_ids()
    except EnvError as e:
        tried.append(f"Gymnasium ids (gymnasium unavailable: {INSTALL_HINT})")
        registry = None
        logger.debug("gymnasium lookup skipped: %s", e)
    if registry is not None:
        if env_id in registry:
            from .gym_multiagent import make_gymnasium_team

            return make_gymnasium_team(env_id, **common)
        tried.append("Gymnasium ids (not registered)")
    known = [*BUILTIN_ENVS, *(registry if registry is not None else ())]
    raise EnvError(
        f"unknown env id {env_id!r}.{did_you_mean(env_id, known)} Tried: {'; '.join(tried)}. "
        + _ACCEPTED_FORMS.format(builtins=", ".join(BUILTIN_ENVS))
    )


__all__ = [
    "BUILTIN_ENVS",
    "INSTALL_HINT",
    "BuiltinEnv",
    "UnsupportedEnvError",
    "builtin_env_names",
    "make_env",
]
