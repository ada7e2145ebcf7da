"""The exception family of `qmix_edge.export`.

Every error says what was expected, what was found, and what to do. ``qmix-export`` maps
`ExportConfigError` to exit code 2 and every other `ExportError` to exit code 1.
"""

from __future__ import annotations


class ExportError(Exception):
    """The export failed: nothing that looks like a good artifact was left behind."""


class ExportConfigError(ExportError, ValueError):
    """An export option (fallback action, precision, key file, output path) is invalid (exit 2)."""


class ParityError(ExportError):
    """The ONNX graphs do not reproduce the torch network on the recorded trajectories."""
