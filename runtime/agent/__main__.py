"""``python -m qmix_edge.runtime.agent``."""

import sys

from .cli import main

sys.exit(main())
