"""Every Numba option the project uses, in one place.

Kernels are built with :func:`jit` so that flags cannot drift between modules.
"""

import numba

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
