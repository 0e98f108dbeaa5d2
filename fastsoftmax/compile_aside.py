"""Compile one kernel in a second process, into numba's cache, while this one compiles others.

Numba compiles one function at a time, on one core.  Kernels that do not call one another
(the sweep's parallel shell and the epoch kernel it reaches through a function pointer)
can compile at once: a child process compiles one of them and writes it to numba's cache,
and this process loads it from there when it has compiled the rest.  It pays only on a
first run with an empty cache; a kernel already in the cache, or in this process, or a
process with one CPU, or caching turned off, starts no child.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from contextlib import contextmanager

from numba.core.caching import NullCache

from .cpus import available_cpus

# The child: unpickle (sys.path, module, name, argument types), compile, exit.  Its output
# is dropped: on any failure this process compiles the kernel itself and reports the
# error, if there is one, as a compile here would.  It takes this process's sys.path as it
# is: "python -c" puts the working directory first, and a checkout there would shadow the
# installed package this process imported, so the child would compile another file, which
# numba caches apart.
_CHILD = """
import importlib, pickle, sys
path, module, name, args = pickle.loads(sys.stdin.buffer.read())
sys.path[:] = path
getattr(importlib.import_module(module), name).compile(args)
"""


def _cached(dispatcher, args) -> bool | None:
    """True if numba's cache holds ``dispatcher`` for ``args``, None if it keeps no cache.

    Uses the dispatcher's cache object (numba's own, not public API): the one check
    that costs a cache lookup and no compile.
    """
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or isinstance(cache, NullCache):
        return None
    try:
        return cache.load_overload(tuple(args), dispatcher.targetctx) is not None
    except Exception:  # an unreadable or foreign cache entry: numba recompiles it anyway
        return False


@contextmanager
def compiled_aside(dispatcher, args: tuple):
    """Compile ``dispatcher`` for the argument types ``args`` in a child process while the
    block runs; on leaving the block, load it here (or compile it here, if the child did
    not leave it in the cache).

    An exception in the block (KeyboardInterrupt included) kills the child and leaves the
    kernel uncompiled.
    """
    child = None
    module = dispatcher.py_func.__module__
    # The name the module binds it to, which the child looks up: a kernel made by
    # a factory has a qualified name among the factory's locals.
    name = next((k for k, v in vars(sys.modules[module]).items() if v is dispatcher), None)
    if name is not None and tuple(args) not in dispatcher.overloads \
            and available_cpus().count > 1 and _cached(dispatcher, args) is False:
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            child.stdin.write(pickle.dumps((sys.path, module, name, tuple(args))))
            child.stdin.close()
        except OSError:  # the child died at once: this process compiles the kernel
            pass
    try:
        yield
        if child is not None:
            child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
    dispatcher.compile(tuple(args))
