"""qmix-edge: train QMIX centrally, export one ONNX graph per agent, run each agent on its own device.

The package root holds only the version and the public facade. `Trainer` needs the ``[train]``
extra (torch); it is imported lazily so that a device with the base install can import
`qmix_edge.runtime` without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qmix_edge.version import __version__

if TYPE_CHECKING:
    from qmix_edge.train.trainer import Trainer

__all__ = ["Trainer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Trainer":
        try:
            from qmix_edge.train.trainer import Trainer
        except ModuleNotFoundError as e:
            if e.name in {"torch", "pettingzoo", "yaml"}:
                raise ModuleNotFoundError(
                    f"qmix_edge.Trainer needs the training extra ({e.name} is missing); "
                    "install it with: pip install 'qmix-edge[train]'"
                ) from e
            raise
        return Trainer
    raise AttributeError(f"module 'qmix_edge' has no attribute {name!r}")
