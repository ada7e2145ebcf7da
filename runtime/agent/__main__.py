"""``python -m qmix_edge.runtime.agent``."""

import sys

from .runner import main

sys.exit(main())
