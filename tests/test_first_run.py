"""A first run on an empty numba cache: one compiled specialisation of each kernel."""

import os
import subprocess
import sys

import pytest

from fastsoftmax.host.cpus import available_cpus

# The sweep on a grid of plain SGD (the default grid's rule), then the test-set evaluation
# and fs.train on read-only uint8 images and on float32 ones; with "adam" as argument, a
# grid with Adam too.  Prints, per step, the number of compiled specialisations of every
# kernel this process holds, and the epoch kernels' cache hits and misses.
_ONE_OF_EACH = """
import sys
import numpy as np
import fastsoftmax as fs
from fastsoftmax.kernels import epoch
from fastsoftmax.sweep import grid, run_sweep
from numba.core.registry import CPUDispatcher

def specialisations():
    kernels = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("fastsoftmax"):
            for attr, value in vars(module).items():
                if isinstance(value, CPUDispatcher):  # the epoch kernels share a qualname
                    closure = value.py_func.__qualname__.startswith("_epoch_kernel")
                    kernels[attr if closure else value.py_func.__qualname__] = \
                        len(value.overloads)
    return kernels

rng = np.random.default_rng(0)
X = rng.integers(0, 256, (60, 784), dtype=np.uint8)
y = rng.integers(0, 10, 60)
# what the CLI does with the loader's read-only test images, and what a user does
frozen = X.copy()
frozen.flags.writeable = False
floats = X / np.float32(255)  # float images: the same kernels, other rows
for rules in ([["sgd"]] + ([["sgd", "adam"]] if sys.argv[1:] == ["adam"] else [])):
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.1], epochs=[1], alpha=[1e-4],
                              hidden_size=[8], optimizer=rules)
    out = run_sweep(configs, X[:40], y[:40], X[40:], y[40:], workers=1)
    params = out.params[configs[0]]
    for data in (frozen, floats):
        fs.evaluate(params, data, y)
        fs.predict(params, data)
        fs.train(data, y, hidden_size=8, batch_size=16, epochs=1, optimizer=rules[-1])
    print(repr(specialisations()))
    for kernel in (epoch._train_epoch_sgd, epoch._train_epoch_many):
        print(sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
"""


def _run(*args, env=None):
    out = subprocess.run([sys.executable, "-c", _ONE_OF_EACH, *args], env=env, check=True,
                         timeout=600, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.mark.cold_compile
def test_a_first_run_compiles_one_specialisation_of_each_kernel(tmp_path):
    """The sweep, the test-set evaluation and fs.train on read-only uint8 images and
    on float32 images share every compiled kernel: a literal argument (0, False), a
    read-only array or a kernel typed on the data's dtype would each make numba
    compile a kernel again, seconds each on a first run (#10's cold start).  Counted in
    numba's cache, filled from empty.  With more than one CPU the epoch kernel compiles
    in a child process while this one compiles the sweep (fastsoftmax.kernels.
    compile_aside), and this one loads it from the cache.  A grid of plain SGD uses the
    epoch kernel without the other rules, and compiles no other."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    counts, sgd, rules = _run(env=env)
    counts = eval(counts)
    assert counts["_sweep"] == counts["_run_worker"] == counts["_forward_blocks"] == 1
    assert {n for n, c in counts.items() if c > 1} == set(), counts
    # (hits, misses): loaded from the cache the child filled, or compiled here
    aside = available_cpus().count > 1
    assert sgd.split() == (["1", "0"] if aside else ["0", "1"])
    assert rules.split() == ["0", "0"] and counts["_train_epoch_many"] == 0, \
        "plain SGD compiled the other epoch kernel"
    assert counts["_train_epoch_sgd"] == 1
    files = sorted(p.name for p in tmp_path.rglob("*.nbc"))
    for kernel in ("engine._sweep-", "engine._run_worker-", "evaluation._forward_blocks-"):
        assert any(name.startswith(kernel) for name in files), kernel
    # The two epoch kernels are one closure's two instances (rules or none), which
    # numba's cache keeps in one index: the one plain SGD uses is the first file.
    epochs = [name for name in files if name.startswith("epoch._epoch_kernel.locals.epoch-")]
    assert [name[-6:] for name in epochs] == [".1.nbc"], epochs
    # _tiles too: every product passes it one coefficient per column, the constant
    # ones as well (steps._overwrite_coefs), as the wide W1 update must.
    twice = [name for name in files if not name.endswith(".1.nbc")]
    assert twice == [], f"compiled more than once: {twice}"


def test_a_grid_that_adds_adam_adds_one_kernel():
    """Then a grid with Adam too takes the epoch kernel with the other rules: one kernel
    more, and no kernel a second specialisation.  (Counted in a process of its own on the
    suite's cache: what it loads, a first run compiles.)"""
    counts_sgd, _, _, counts_both, _, many = _run("adam")
    before, after = eval(counts_sgd), eval(counts_both)
    assert before["_train_epoch_many"] == 0 and after["_train_epoch_many"] == 1
    assert {n for n, c in after.items() if c > 1} == set(), after  # none a second time
    assert sum(map(int, many.split())) == 1  # loaded (or compiled) once
