"""Write a file so that it is either complete under its name or not there at all."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; rename it to ``path`` once the block succeeds.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is left
    as it was, so a crash never leaves a half-written file under the real name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
