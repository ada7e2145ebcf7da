"""Export a trained QMIX run as one self-contained ONNX graph per agent, with a manifest.

Workstation side (torch + onnx): `export_run` / `export_agent_networks` write an artifact directory
that `qmix_edge.runtime.policy.AgentPolicy` loads on a device. See DESIGN.md, "Export".
"""

from __future__ import annotations

from .errors import ExportConfigError, ExportError, ParityError
from .exporter import export_agent_networks, export_run, resolve_fallback_actions
from .graph import OPSET, AgentGraph, export_graph
from .signing import generate_keypair, load_private_key

__all__ = [
    "OPSET",
    "AgentGraph",
    "ExportConfigError",
    "ExportError",
    "ParityError",
    "export_agent_networks",
    "export_graph",
    "export_run",
    "generate_keypair",
    "load_private_key",
    "resolve_fallback_actions",
]
