import os
import sys

# scikit-learn's estimator checks include one that runs only when SciPy's array
# API support is switched on, which must happen before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

# `python -m pytest` in a clone imports the clone's fastsoftmax; the processes the tests
# start (the command line, Dask workers, tests/prefill.py) must import the same one, not
# an installed copy elsewhere: numba caches compiled kernels beside each copy's source,
# so two copies compile every kernel twice.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
sys.path.insert(0, ROOT)  # this process too, wherever pytest was started from

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastsoftmax as fs  # noqa: E402


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


TESTS = Path(__file__).resolve().parent


def pytest_configure(config):
    """Before the workers start, on a run of the whole suite: numba's cache filled with
    the kernels of each dtype by one process per dtype, side by side (tests/prefill.py
    says why).  A run of chosen files skips it; where the cache is filled already, each
    process only loads from it."""
    if hasattr(config, "workerinput") or any(
            Path(arg.split("::")[0]).resolve() != TESTS for arg in config.args):
        return
    procs = [subprocess.Popen([sys.executable, str(TESTS / "prefill.py"), dtype],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for dtype in ("float32", "float64")]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:  # the tests that need the kernel fail with their own message
            sys.stderr.write(f"tests/prefill.py failed ({proc.returncode}):\n{err[-2000:]}\n")


# Files whose tests start processes (the command line, Dask workers) that load the
# kernels from numba's cache: run last, after the tests that compile those kernels
# in-process, they find them there instead of each compiling them again.  Longest
# first: the last tests of a run decide how long one worker waits for the other.
STARTS_PROCESSES = ("test_cluster.py", "test_cli_phases.py", "test_report.py", "test_cpus.py")


def pytest_collection_modifyitems(config, items):
    # Tests that compile kernels into an empty cache of their own hold a core for a while:
    # first in line, pytest-xdist runs them beside the rest instead of after it.
    def order(item):
        name = item.path.name
        return (item.get_closest_marker("cold_compile") is None,
                STARTS_PROCESSES.index(name) if name in STARTS_PROCESSES else -1)
    items.sort(key=order)
