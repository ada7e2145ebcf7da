"""The artifact contract's tensor names: the one place exporter, runtime and tests import them from.

No torch here (runtime/).
"""

from __future__ import annotations

from typing import Final


class TensorNames:
    """Input and output names of every exported agent graph (see DESIGN.md, "Export")."""

    OBS: Final = "obs"
    """float32 [batch, obs_dim]: the agent's own observation, at its true size."""
    ACTION_MASK: Final = "action_mask"
    """bool [batch, n_actions]: True where the action is allowed."""
    PREV_ACTION: Final = "prev_action"
    """int64 [batch]: the previous action, -1 at t=0 (only when trained with last-action input)."""
    H_IN: Final = "h_in"
    """float32 [batch, hidden_dim]: recurrent state in (GRU agents only)."""
    Q_VALUES: Final = "q_values"
    """float32 [batch, n_actions]: Q-values, masked-out actions included unchanged."""
    ACTION: Final = "action"
    """int64 [batch]: argmax of Q over allowed actions, ties to the lowest index."""
    H_OUT: Final = "h_out"
    """float32 [batch, hidden_dim]: recurrent state out (GRU agents only)."""


MANIFEST_FILE: Final = "manifest.json"
"""The artifact directory's manifest file name."""
MANIFEST_FORMAT_VERSION: Final = 1
"""The manifest format this package writes and the newest it reads."""
