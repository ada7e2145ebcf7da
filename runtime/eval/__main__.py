"""``python -m qmix_edge.runtime.eval``."""

import sys

from .cli import main

sys.exit(main())
