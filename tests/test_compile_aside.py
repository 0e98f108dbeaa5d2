"""compile_aside: a kernel compiled in a child process, loaded from numba's cache here.

Each case runs in a fresh interpreter with its own empty NUMBA_CACHE_DIR (numba reads it
at import) and a one-line cached kernel, so the compiles take a second, not the sweep's
twenty.  The sweep's own use is checked in tests/test_first_run.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest


KERNEL = """
import numba

@numba.njit(cache=True)
def add_one(x):
    return x + 1


@numba.njit
def add_one_uncached(x):
    return x + 1
"""

SCRIPT = """
import contextlib, json, subprocess, sys
sys.path.insert(0, {here!r})
from numba import types
import fastsoftmax.kernels.compile_aside as aside
from fastsoftmax.host.cpus import CPULimit
import tiny

case = {case!r}
# Two CPUs (a child even on a 1-CPU runner) but in the one-CPU case.
aside.available_cpus = lambda: CPULimit(1 if case.endswith("one cpu") else 2, "test")
kernel = tiny.add_one_uncached if case == "no cache" else tiny.add_one
started = []
real_popen = subprocess.Popen

def popen(*args, **kwargs):
    if case in ("warm", "one cpu", "no cache", "standby one cpu"):
        raise AssertionError(f"a child was started ({{case}})")
    started.append(real_popen(*args, **kwargs))
    return started[-1]

aside.subprocess.Popen = popen
if case in ("child fails", "standby died"):
    aside._CHILD = "import sys; sys.exit(3)"
if case == "interrupted":
    aside._CHILD = "import time; time.sleep(60)"
args = (types.int64,)
interrupted = False
standby = aside.standing_by("tiny") if case.startswith("standby") else contextlib.nullcontext()
try:
    with standby:
        if case == "standby died":
            started[0].wait(timeout=60)
        if case != "standby unused":
            with aside.compiled_aside(kernel, args):
                if case == "interrupted":
                    raise KeyboardInterrupt
        running_in_block = [p.poll() is None for p in started]
except KeyboardInterrupt:
    interrupted = True
stats = kernel.stats
print(json.dumps(dict(
    children=len(started),
    child_status=[p.poll() for p in started],
    running_in_block=None if interrupted else running_in_block,
    compiled=args in kernel.overloads,
    hits=sum(stats.cache_hits.values()), misses=sum(stats.cache_misses.values()),
    interrupted=interrupted,
    result=kernel(41) if not interrupted and case != "standby unused" else None)))
"""


def _run(tmp_path, case, cwd=None, **env):
    """Run SCRIPT for ``case`` as a script file, from ``cwd`` (default: tmp_path), with
    ``env`` added to the environment."""
    (tmp_path / "tiny.py").write_text(textwrap.dedent(KERNEL))
    script = tmp_path / "script" / "run.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT.format(here=str(tmp_path), case=case))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), **env)
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=cwd or tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["cold", "standby cold"])
def test_a_first_run_compiles_in_the_child_and_loads_here(tmp_path, case):
    # "standby cold": the one child is standing_by's, started before compiled_aside knew
    # its kernel, and handed it then.
    got = _run(tmp_path, case)
    assert got["children"] == 1 and got["child_status"] == [0]
    # Loaded from the cache the child filled; this process compiled nothing.
    assert got["compiled"] and got["hits"] == 1 and got["misses"] == 0
    assert got["result"] == 42


def test_a_kernel_already_in_the_cache_starts_no_child(tmp_path):
    _run(tmp_path, "cold")
    got = _run(tmp_path, "warm")  # the patched Popen fails the run if a child starts
    assert got["children"] == 0 and got["compiled"] and got["result"] == 42


def test_when_the_child_fails_this_process_compiles(tmp_path):
    got = _run(tmp_path, "child fails")
    assert got["child_status"] == [3]
    assert got["compiled"] and got["misses"] == 1 and got["result"] == 42


def test_an_interrupt_in_the_block_kills_the_child(tmp_path):
    got = _run(tmp_path, "interrupted")
    assert got["interrupted"]
    assert got["children"] == 1 and got["child_status"][0] is not None  # not running
    assert got["child_status"][0] != 0  # killed, not finished (it sleeps a minute)
    assert not got["compiled"]


def test_one_cpu_starts_no_child(tmp_path):
    got = _run(tmp_path, "one cpu")  # the patched Popen fails the run if a child starts
    assert got["children"] == 0 and got["compiled"] and got["misses"] == 1


def test_a_kernel_without_a_cache_starts_no_child(tmp_path):
    got = _run(tmp_path, "no cache")  # nothing a child compiles could reach this process
    assert got["children"] == 0 and got["compiled"] and got["result"] == 42


def test_the_child_imports_the_kernel_this_process_imported(tmp_path):
    # Another tiny.py in the working directory: "python -c" (the child) puts that
    # directory first on sys.path, where this script does not, and before the entries
    # both processes start with (here PYTHONPATH, as site-packages for an installed
    # package).  A child that imported it would fill the cache for that file, and this
    # process would compile its own.
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "tiny.py").write_text(textwrap.dedent(KERNEL).replace("x + 1", "x + 2"))
    got = _run(tmp_path, "cold", cwd=other, PYTHONPATH=str(tmp_path))
    assert got["children"] == 1 and got["child_status"] == [0]
    assert got["hits"] == 1 and got["misses"] == 0 and got["result"] == 42


def test_a_standby_child_not_needed_is_stopped_at_once(tmp_path):
    _run(tmp_path, "cold")
    got = _run(tmp_path, "standby warm")
    assert got["children"] == 1
    assert got["running_in_block"] == [False]  # stopped by compiled_aside, in the block
    assert got["compiled"] and got["hits"] == 1 and got["misses"] == 0


def test_a_standby_child_never_handed_a_kernel_is_stopped_with_the_block(tmp_path):
    got = _run(tmp_path, "standby unused")
    assert got["children"] == 1
    assert got["running_in_block"] == [True]  # waiting for a kernel
    assert got["child_status"][0] is not None  # not running
    assert not got["compiled"]


def test_a_standby_that_died_is_replaced_by_a_child_of_its_own(tmp_path):
    got = _run(tmp_path, "standby died")  # every child exits with status 3 at once
    assert got["children"] == 2 and got["child_status"] == [3, 3]
    assert got["compiled"] and got["misses"] == 1 and got["result"] == 42  # then here


def test_one_cpu_starts_no_standby(tmp_path):
    got = _run(tmp_path, "standby one cpu")  # the patched Popen fails the run if a child starts
    assert got["children"] == 0 and got["compiled"] and got["misses"] == 1


def test_cache_saves_wait_for_each_other(tmp_path):
    """numba numbers a function's cache entries from its index: two processes saving at
    once could give two signatures one data file.  A save waits for the lock beside the
    index (fastsoftmax.kernels.jit), so whoever saves second reads the first's entry and
    numbers its own apart."""
    import fcntl
    import threading

    from numba.core import caching

    import fastsoftmax.kernels.jit  # noqa: F401  (installs the lock)

    first = caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", ("stamp", 1))
    second = caching.IndexDataCacheFile(str(tmp_path), "f-1.py311", ("stamp", 1))
    first.save("float32", b"f32")
    with open(first._index_path + ".lock", "a") as held:  # another process saving
        fcntl.flock(held, fcntl.LOCK_EX)
        saver = threading.Thread(target=second.save, args=("float64", b"f64"))
        saver.start()
        saver.join(timeout=0.5)
        assert saver.is_alive(), "a save went ahead while the index was locked"
        fcntl.flock(held, fcntl.LOCK_UN)
    saver.join(timeout=60)
    assert not saver.is_alive()
    assert first.load("float32") == b"f32" and first.load("float64") == b"f64"
    assert sorted(p.name for p in tmp_path.glob("*.nbc")) == ["f-1.py311.1.nbc",
                                                             "f-1.py311.2.nbc"]
