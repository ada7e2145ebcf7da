"""What every qmix-edge command does with an exception nobody expected: it is a bug, so the user
gets its full traceback and exit code 1, never a one-line "usage error" that hides it.

Usage and config errors (exit 2, one line) and expected runtime failures (exit 1, one line) are
each command's own exception family; everything else reaches `report_bug`. Stdlib only.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
"""0 success; 1 a runtime failure or a bug; 2 a usage or config error."""


def report_bug(prog: str, error: BaseException) -> int:
    """Print ``error``'s traceback and a closing line to stderr; return `EXIT_FAILURE`."""
    traceback.print_exception(error, file=sys.stderr)
    print(
        f"{prog}: unexpected error (a bug in {prog}, not in your input): "
        f"{type(error).__name__}: {error}. The traceback above says where; please report it.",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def guarded(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """``main(argv)``, with any `Exception` it lets through reported by `report_bug`."""
    try:
        return main(argv)
    except Exception as e:
        return report_bug(prog, e)
