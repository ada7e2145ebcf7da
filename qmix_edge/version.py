"""The package version, in a module of its own so that any part of qmix-edge can read it without
importing the package root (whose lazy `Trainer` would otherwise make a loop with train/)."""

from __future__ import annotations

__version__ = "0.1.0"
