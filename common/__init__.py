"""Small stdlib-only pieces every part of qmix-edge shares: atomic file writes and the one
declaration of a command's options (a frozen dataclass) from which its parser, ``--help`` and child
command lines are built.

This package sits below every other one: it imports nothing from qmix-edge and nothing outside the
standard library, so a device's lean install, the trainer and the exporter can all use it.
"""
