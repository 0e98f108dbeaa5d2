"""Compile into numba's cache the kernels the suite runs, for models of one dtype:
``python tests/prefill.py float32`` (or float64).

tests/conftest.py runs it once per dtype, side by side, before pytest-xdist starts its
workers.  Without it, both workers meet an empty cache at once and each compiles the
same kernels (seconds each), the second copy thrown away; with it, the two dtypes'
kernels compile on the two CPUs at the same time, once, and the workers load them.
The calls below are the entry points the tests use, on tiny data, so the compiled
signatures are theirs.  Nothing here is checked: a kernel that fails to compile fails
the tests that use it, with their own message.
"""

import sys

import numpy as np

import fastsoftmax as fs
from fastsoftmax import kernels
from fastsoftmax.kernels import products
from fastsoftmax.sweep import grid, run_sweep


def prefill(dtype: np.dtype) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 40)
    floats = pixels / dtype.type(255)
    for tiles in products.DESIGNS.values():  # the kernels take either as a pointer
        tiles.compile(products.tiles_types(dtype))
    params = fs.init_params(784, 8, 10, seed=0, dtype=dtype)
    for X in (floats, pixels):  # the same kernels read both (kernels.data_rows)
        for optimizer in ("sgd", "adam"):  # the epoch kernels without and with other rules
            fs.train(X, y, hidden_size=8, batch_size=16, epochs=1, optimizer=optimizer,
                     dtype=dtype, X_val=X, y_val=y)
        fs.evaluate(params, X, y)
        fs.predict(params, X)
    kernels.loss_and_grads(params, floats, y, 1e-3)
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.1], epochs=[1], alpha=[1e-4],
                              hidden_size=[8], optimizer=["sgd", "adam"])
    run_sweep(configs, pixels[:30], y[:30], pixels[30:], y[30:], workers=1, dtype=dtype)


if __name__ == "__main__":
    prefill(np.dtype(sys.argv[1]))
