"""``python -m fastsoftmax.report DIR``: the report of a sweep's results folder."""

import sys

from .pages import main

sys.exit(main())
