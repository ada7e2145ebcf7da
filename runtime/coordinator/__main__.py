"""``python -m qmix_edge.runtime.coordinator``."""

import sys

from .core import main

sys.exit(main())
