"""``python -m qmix_edge.runtime.coordinator``."""

import sys

from .cli import main

sys.exit(main())
