"""``python -m fastsoftmax.sweep``: the grid search from the shell (:mod:`fastsoftmax.cli`)."""

import sys

from ..cli import main

sys.exit(main())
