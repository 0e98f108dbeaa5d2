"""A sweep's results folder as pictures and a page: ``python -m fastsoftmax.report DIR``.

- :mod:`.plots`: each picture as a matplotlib Figure (the extra ``fastsoftmax[plot]``),
  from a results folder, ``fs.train``'s history or a fitted estimator;
- :mod:`.pages`: the report (``report.html``, ``report.md`` and the pictures) and its
  command line.

matplotlib is imported only when a picture is drawn, so this package imports without it.
"""

from .pages import Report, build_parser, build_report, main

__all__ = ["Report", "build_parser", "build_report", "main"]
