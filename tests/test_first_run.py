"""A first run on an empty numba cache: one compiled specialisation of each kernel."""

import os
import subprocess
import sys

import pytest

from fastsoftmax.host.cpus import available_cpus

_ONE_OF_EACH = """
import sys
import numpy as np
import fastsoftmax as fs
from fastsoftmax.kernels import epoch
from fastsoftmax.sweep import grid, run_sweep

rng = np.random.default_rng(0)
X = rng.integers(0, 256, (60, 784), dtype=np.uint8)
y = rng.integers(0, 10, 60)
# what the CLI does with the loader's read-only test images, and what a user does
frozen = X.copy()
frozen.flags.writeable = False
for rules, kernel in ((["sgd"], "_train_epoch_sgd"), (["sgd", "adam"], "_train_epoch_many")):
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.1], epochs=[1], alpha=[1e-4],
                              hidden_size=[8], optimizer=rules)
    out = run_sweep(configs, X[:40], y[:40], X[40:], y[40:], workers=1)
    params = out.params[configs[0]]
    fs.evaluate(params, frozen, y)
    fs.predict(params, frozen)
    fs.train(frozen, y, hidden_size=8, batch_size=16, epochs=1, optimizer=rules[-1])
    floats = X / np.float32(255)  # float images: the same kernels, other rows
    fs.train(floats, y, hidden_size=8, batch_size=16, epochs=1, optimizer=rules[-1])
    fs.evaluate(params, floats, y)
    stats = getattr(epoch, kernel).stats
    print(kernel, sum(stats.cache_hits.values()), sum(stats.cache_misses.values()),
          len(epoch._train_epoch_many.overloads))
"""


@pytest.mark.cold_compile
def test_a_first_run_compiles_one_specialisation_of_each_kernel(tmp_path):
    """The sweep, the test-set evaluation and fs.train on read-only uint8 images and
    on float32 images share every compiled kernel: a literal argument (0, False), a
    read-only array or a kernel typed on the data's dtype would each make numba
    compile a kernel again, seconds each on a first run (#10's cold start).  Counted in numba's cache, filled from empty.  With more
    than one CPU the epoch kernel compiles in a child process while this one compiles
    the sweep (fastsoftmax.kernels.compile_aside), and this one loads it from the cache.
    A grid of plain SGD alone uses the epoch kernel without the other rules, and
    compiles no other; a grid that adds Adam then compiles that one kernel more."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _ONE_OF_EACH], env=env,
                         check=True, timeout=600, capture_output=True, text=True).stdout
    sgd, rules = [line.split() for line in out.splitlines()[-2:]]
    aside = available_cpus().count > 1
    # (hits, misses): loaded from the cache the child filled, or compiled here
    loaded = ["1", "0"] if aside else ["0", "1"]
    assert sgd == ["_train_epoch_sgd", *loaded, "0"], "plain SGD compiled the other kernel"
    assert rules == ["_train_epoch_many", *loaded, "1"]
    files = sorted(p.name for p in tmp_path.rglob("*.nbc"))
    assert any(name.startswith("engine._sweep-") for name in files)
    assert any(name.startswith("engine._run_worker-") for name in files)
    assert any(name.startswith("evaluation._forward_blocks-") for name in files)
    # The two epoch kernels are one closure's two instances (rules or none), which
    # numba's cache keeps in one index: one file each.
    epochs = [name for name in files if name.startswith("epoch._epoch_kernel.locals.epoch-")]
    assert [name[-6:] for name in epochs] == [".1.nbc", ".2.nbc"], epochs
    # _tiles too: every product passes it one coefficient per column, the constant
    # ones as well (steps._overwrite_coefs), as the wide W1 update must.
    twice = [name for name in files if not name.endswith(".1.nbc") and name not in epochs]
    assert twice == [], f"compiled more than once: {twice}"
