"""What the tests share besides fixtures: tolerances, comparisons, data makers, arguments."""

import numpy as np

import fastsoftmax as fs

# Agreement tolerances, named for the dtype (relative to the largest entry).
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-30)
    return float(np.abs(a - b).max() / scale)


def assert_params_close(p, q, dtype):
    for name, a, b in zip(fs.Params._fields, p, q):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= RTOL[np.dtype(dtype)], (name, rel_err(a, b))


def make_data(n, n_features=784, n_classes=10, seed=0, dtype=np.float64):
    """Images-like data: half the pixels zero, the rest in (0, 1]; labels
    depend on the pixels so training has something to learn."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_features)) * (rng.random((n, n_features)) < 0.5)
    proj = rng.standard_normal((n_features, n_classes))
    y = (X @ proj).argmax(axis=1)
    return X.astype(dtype), y.astype(np.int64)


# A four-configuration grid on 500 images of data_dir: the command line in seconds.
SMALL_ARGS = ["--batch-sizes", "16,64", "--learning-rates", "0.1", "--epochs", "1,2",
              "--alphas", "1e-3", "--hidden-sizes", "5", "--limit", "500"]
