import os

# scikit-learn's estimator checks include one that runs only when SciPy's array
# API support is switched on, which must happen before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastsoftmax as fs  # noqa: E402

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


@pytest.fixture(scope="session")
def real_data():
    """The real Fashion-MNIST, or a skip that says exactly why it is absent."""
    try:
        return fs.load_fashion_mnist(download=False)
    except FileNotFoundError as exc:
        why = f"real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc}"
        # CI installs the data, so there a missing dataset is a failure, not a skip.
        if os.environ.get("FASTSOFTMAX_REQUIRE_DATA"):
            pytest.fail(f"FASTSOFTMAX_REQUIRE_DATA is set but {why}")
        pytest.skip(why)


# A four-configuration grid on 500 images of data_dir: the command line in seconds.
SMALL_ARGS = ["--batch-sizes", "16,64", "--learning-rates", "0.1", "--epochs", "1,2",
              "--alphas", "1e-3", "--hidden-sizes", "5", "--limit", "500"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Fashion-MNIST-shaped .npy files (60,000 + 10,000 images) that a small model can learn."""
    d = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    for key, n in (("train", 60000), ("test", 10000)):
        labels = rng.integers(0, 10, n)
        # Learnable: each class lights up its own band of pixels.
        images = rng.integers(0, 60, (n, 784), dtype=np.uint8)
        for k in range(10):
            images[labels == k, k * 78:(k + 1) * 78] += 150
        np.save(d / f"fashion_mnist_{key}_images.npy", images)
        np.save(d / f"fashion_mnist_{key}_labels.npy", labels)
    return d
