"""Every Numba option the project uses, in one place.

Kernels are built with :func:`jit` so that flags cannot drift between modules.
"""

import numba
from numba.core import caching

# fastmath=True would include "nnan" and "ninf", under which ``np.isfinite`` is
# folded to True (numba issue 2919) and divergence could never be detected.
# These flags still let LLVM reassociate and vectorise the reductions.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


def jit(fn=None, *, parallel=False, cache=True, inline="never"):
    """``numba.njit`` with the project's flags.

    ``error_model="numpy"`` drops the division-by-zero checks that would block
    vectorisation; ``nogil`` lets a Python thread report progress while a
    kernel runs; ``cache`` writes compiled code next to the module (or to
    ``NUMBA_CACHE_DIR`` when the install is read-only).
    """
    options = dict(
        fastmath=set(FASTMATH),
        error_model="numpy",
        nogil=True,
        cache=cache,
        parallel=parallel,
        boundscheck=False,
        inline=inline,
    )
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


def _serialise_cache_saves() -> None:
    """Make numba's cache saves safe between processes.

    numba keeps all the signatures of a function in one index file, each signature's code in
    a data file numbered from the index.  Two processes adding different signatures of one
    function at once (two test workers, a sweep and its compile-aside child, two sweeps)
    read the same index and may pick the same number: one signature's entry then names the
    other's machine code.  Each save here holds an exclusive lock on a file beside the
    index while it reads the index, numbers the entry and writes, so they number apart.
    Without fcntl (Windows) saves stay as numba makes them.
    """
    try:
        import fcntl
    except ImportError:
        return
    save = caching.IndexDataCacheFile.save
    if getattr(save, "locked", False):
        return

    def locked_save(self, key, data):
        with open(self._index_path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return save(self, key, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    locked_save.locked = True
    caching.IndexDataCacheFile.save = locked_save


_serialise_cache_saves()
