"""Importing the simulation packages on demand: a missing PettingZoo, mpe2 or Gymnasium (or VMAS and
its torch) becomes an `EnvError` that names the extra to install.

Its own module, below the registry and the env adapters, because all of them import on demand.
Numpy only; no torch.
"""

from __future__ import annotations

import importlib
import types

from .errors import EnvError

INSTALL_HINT = "pip install 'qmix-edge[sim]'"
"""What to run when PettingZoo, mpe2 or Gymnasium is missing."""

_SIM_PACKAGES = ("pettingzoo", "mpe2", "gymnasium", "pygame")


def import_sim_module(
    module_name: str,
    *,
    packages: tuple[str, ...] = _SIM_PACKAGES,
    extra: tuple[str, str] = ("simulation", INSTALL_HINT),
) -> types.ModuleType:
    """Import a module, turning a missing simulation dependency into an `EnvError` with the extra.

    ``packages``: the top-level packages whose absence the ``extra`` (its name, its install command)
    cures; by default the ``[sim]`` extra's."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing in packages:
            raise EnvError(
                f"importing {module_name!r} needs {missing!r}, which is not installed; "
                f"install the {extra[0]} extra: {extra[1]}"
            ) from e
        raise EnvError(
            f"could not import module {module_name!r}: {e}. Check the module part of the env id "
            "(module:attribute) and that its package is installed."
        ) from e
