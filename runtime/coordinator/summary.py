"""What one coordinator run did: per-agent counters (`AgentCounters`), the run's outcome and exit
status (`RunSummary`), and the closing lines qmix-coordinator logs (`summary_lines`).

Must not import torch (nor qmix_edge.train / qmix_edge.export): it runs on a ground station.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import EXIT_FAILURE, EXIT_INCOMPLETE_TEAM, EXIT_OK


@dataclass
class AgentCounters:
    """Per-agent statistics of one coordinator process (mutable, changed on the coordinator's
    event loop only)."""

    joins: int = 0
    rejoins: int = 0
    decisions: int = 0
    """Replies applied as sent (in range and allowed)."""
    fallbacks: int = 0
    """Steps on which the legal-action rule replaced the agent's reply (missing or invalid)."""
    late_replies: int = 0
    invalid_actions: int = 0
    """Replies out of range or masked (replaced; also counted in ``fallbacks``)."""
    deaths: int = 0
    disconnects: int = 0
    malformed: int = 0


@dataclass(frozen=True)
class RunSummary:
    """What `Coordinator.run` did."""

    finished: bool
    """All requested episodes ran (False: stopped early)."""
    episodes: tuple[dict[str, Any], ...]
    """One dict per episode run here: episode_index, seed, steps, return, reason."""
    team_steps: int
    """Team steps of the whole run (including steps of a resumed run's earlier processes)."""
    counters: Mapping[str, AgentCounters]
    """Per-agent counters of this process."""
    never_joined: tuple[str, ...] = ()
    """Agents that never joined this process while it ran episodes (their seats stayed empty)."""
    failure: str | None = None
    """Why the run could not go on (e.g. repeated environment errors); None when it could."""

    @property
    def incomplete_team_episodes(self) -> int:
        """Episodes during which at least one seat was empty (see the episode's ``absent``)."""
        return sum(1 for e in self.episodes if e.get("absent"))

    @property
    def decisions(self) -> int:
        """Replies applied as sent, over every agent."""
        return sum(c.decisions for c in self.counters.values())

    @property
    def exit_status(self) -> int:
        """qmix-coordinator's exit code for this run (`EXIT_OK`, `EXIT_FAILURE`,
        `EXIT_INCOMPLETE_TEAM`)."""
        if self.failure is not None:
            return EXIT_FAILURE
        played = any(e["steps"] > 0 for e in self.episodes)
        if self.never_joined or (played and self.decisions == 0):
            return EXIT_INCOMPLETE_TEAM
        return EXIT_OK


def summary_lines(summary: RunSummary, record: str | None = None) -> list[str]:
    """What a run did, for the last lines of qmix-coordinator: the outcome first (episodes and
    their mean return, none when no episode ended here), then who never joined, the episodes
    played with an empty seat, the invalid replies per agent, and the record written, if any."""
    played = [e for e in summary.episodes if e.get("reason") != "stopped"]
    returns = [e["return"] for e in played]
    outcome = "failed" if summary.failure else "finished" if summary.finished else "stopped"
    counts = f"{summary.team_steps} team steps in the run, {summary.decisions} agent decisions"
    lines = [
        f"{outcome} after {len(played)} episodes here "
        f"(mean return {sum(returns) / len(returns):.4f}), {counts}"
        if returns
        else f"{outcome} before any episode ended here, {counts}"
    ]
    if summary.failure:
        lines.append(summary.failure)
    if summary.never_joined:
        lines.append(
            f"never joined: {', '.join(summary.never_joined)} (their seats stayed empty: every "
            "action of theirs was the legal-action rule's; start their qmix-agent, or raise "
            "--team-wait-s)"
        )
    elif summary.exit_status == EXIT_INCOMPLETE_TEAM:
        lines.append("no agent ever decided: every applied action was the legal-action rule's")
    if summary.incomplete_team_episodes:
        lines.append(
            f"{summary.incomplete_team_episodes} of {len(played)} episodes were played with an "
            "incomplete team (see each episode_end's 'absent' in the record)"
        )
    env_errors = sum(1 for e in played if e.get("reason") == "env_error")
    if env_errors:
        lines.append(f"{env_errors} episodes ended by an environment error (reason env_error)")
    invalid = {a: c.invalid_actions for a, c in summary.counters.items() if c.invalid_actions}
    if invalid:
        lines.append(
            "invalid replies (out of range or masked; replaced): "
            + ", ".join(f"{a} {k}" for a, k in invalid.items())
        )
    if summary.exit_status == EXIT_INCOMPLETE_TEAM:
        lines.append(f"exit status {EXIT_INCOMPLETE_TEAM}: the run did not have its whole team")
    if record:
        lines.append(f"run record appended to {record}")
    return lines
