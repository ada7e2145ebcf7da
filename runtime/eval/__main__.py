"""``python -m qmix_edge.runtime.eval``."""

import sys

from .harness import main

sys.exit(main())
