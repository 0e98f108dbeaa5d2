"""Compile one kernel in a second process, into numba's cache, while this one compiles others.

Numba compiles one function at a time, on one core.  Kernels that do not call one another
(the sweep's parallel shell and the epoch kernel it reaches through a function pointer)
can compile at once: a child process compiles one of them and writes it to numba's cache,
and this process loads it from there when it has compiled the rest.  It pays only on a
first run with an empty cache; a kernel already in the cache, or in this process, or a
process with one CPU, or caching turned off, starts no child.

A child spends its first second or so importing numba and readying its compiler.
:func:`standing_by` starts it early, while this process still loads its data, and the
first :func:`compiled_aside` in its block hands it the kernel.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from contextlib import contextmanager

from numba.core.caching import NullCache

from ..host.cpus import available_cpus

# The child: take this process's sys.path, import the kernel's module (numba with it) and
# ready numba's compiler, then read (module, name, argument types) from stdin, compile,
# exit; on an empty stdin (a standby nobody needed) it exits at once.  Its output is
# dropped: on any failure this process compiles the kernel itself and reports the error,
# if there is one, as a compile here would.  The path is this process's as it is:
# "python -c" puts the working directory first, and a checkout there would shadow the
# installed package this process imported, so the child would compile another file,
# which numba caches apart.
_CHILD = """
import importlib, json, pickle, sys
sys.path[:] = json.loads(sys.argv[1])
importlib.import_module(sys.argv[2])
from numba.core.registry import cpu_target
cpu_target.target_context.refresh()
job = sys.stdin.buffer.read()
if job:
    module, name, args = pickle.loads(job)
    getattr(importlib.import_module(module), name).compile(args)
"""

# The child standing_by started for the first compiled_aside in its block, if any.
_standby: subprocess.Popen | None = None


def _spawn(module: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(sys.path), module],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.wait()
    try:
        child.stdin.close()
    except OSError:  # a job still buffered for a child that died: nothing to flush to
        pass


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
def standing_by(module: str):
    """Start a child for :func:`compiled_aside` now, importing ``module`` (where its
    kernel is), so its start-up overlaps this process's own work in the block.

    The first compiled_aside in the block takes it, whether it needs a child or not;
    a child not taken or not needed is stopped by then or on leaving the block.  Starts
    nothing with one CPU.
    """
    global _standby
    child = None
    if _standby is None and available_cpus().count > 1:
        try:
            child = _standby = _spawn(module)
        except OSError:  # no child then: compiled_aside starts its own or none
            pass
    try:
        yield
    finally:
        if child is not None:
            if _standby is child:
                _standby = None
            _stop(child)


def _take_standby() -> subprocess.Popen | None:
    global _standby
    child, _standby = _standby, None
    return child


@contextmanager
def compiled_aside(dispatcher, args: tuple):
    """Compile ``dispatcher`` for the argument types ``args`` in a child process while the
    block runs; on leaving the block, load it here (or compile it here, if the child did
    not leave it in the cache).

    An exception in the block (KeyboardInterrupt included) kills the child and leaves the
    kernel uncompiled.
    """
    child = _take_standby()
    module = dispatcher.py_func.__module__
    # The name the module binds it to, which the child looks up: a kernel made by
    # a factory has a qualified name among the factory's locals.
    name = next((k for k, v in vars(sys.modules[module]).items() if v is dispatcher), None)
    if name is not None and tuple(args) not in dispatcher.overloads \
            and available_cpus().count > 1 and _cached(dispatcher, args) is False:
        try:
            if child is not None and child.poll() is not None:
                _stop(child)  # a standby that died: reap it and start another
                child = None
            if child is None:
                child = _spawn(module)
            child.stdin.write(pickle.dumps((module, name, tuple(args))))
            child.stdin.close()
        except OSError:  # the child died at once: this process compiles the kernel
            pass
    elif child is not None:  # a standby, not needed
        _stop(child)
        child = None
    try:
        yield
        if child is not None:
            child.wait()
    finally:
        if child is not None:
            _stop(child)
    dispatcher.compile(tuple(args))
