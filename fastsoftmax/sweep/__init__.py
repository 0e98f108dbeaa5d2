"""Parallel grid search: every configuration trained concurrently in compiled code.

``python -m fastsoftmax.sweep`` runs the command line (:mod:`fastsoftmax.cli`).
The package, bottom up:

- :mod:`.grid`: configurations, presets, groups and packs (pure Python);
- :mod:`.results`: a configuration's :class:`Record`, and the results folder,
  written and read back;
- :mod:`.plan`: a grid laid out once as the arrays the kernels read;
- :mod:`.engine`: the compiled parallel loop that trains a plan's packs;
- :mod:`.local` (on this machine's cores) and :mod:`.cluster` (the packs as tasks on a
  Dask cluster), the two runners of :mod:`.runner`'s :func:`run_sweep`.
"""

from .grid import Config
from .runner import run_sweep
from .plan import PACK_SIZE, make_plan
from .results import Record, SweepOutput

__all__ = ["Config", "PACK_SIZE", "Record", "SweepOutput", "make_plan", "run_sweep"]
