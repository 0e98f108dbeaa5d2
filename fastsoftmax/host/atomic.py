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
        # mkstemp makes the file private (0600); the file is the user's result,
        # so give it the permissions open() would: 0666 less the umask.
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    # Linux says it in /proc; elsewhere it can only be read by setting it and
    # setting it back, a moment in which another thread's files would get 0.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
