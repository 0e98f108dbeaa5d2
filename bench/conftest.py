"""Benchmark setup: the real data, honest thread control, and the machine's GEMM limit.

Run with ``python -m pytest bench/`` (see README.md, "Speed").  Every
single-configuration benchmark runs on ONE core for every library: BLAS via
threadpoolctl, torch via set_num_threads, numba via set_num_threads, XLA via
the flags below (which must be set before JAX is imported), and, because the
flags alone did not do it (JAX 0.10 still kept 1.65 cores busy: process CPU
time over wall time), every thread of the process pinned to one core.
"""

import contextlib
import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import pytest  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastsoftmax as fs  # noqa: E402
from peers import scaled  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # One benchmark at a time, in this process: the project's pytest settings run the tests
    # on every CPU with pytest-xdist (-n auto), under which pytest-benchmark switches itself
    # off and two benchmarks would share the cores they time.
    if getattr(config.option, "dist", "no") != "no":
        config.option.dist = "no"
        config.option.numprocesses = 0


@pytest.fixture(scope="session")
def real_data():
    try:
        return fs.load_fashion_mnist(download=False)
    except FileNotFoundError as exc:
        pytest.skip(f"the benchmarks need the real Fashion-MNIST "
                    f"(apt-get install dataset-fashion-mnist): {exc}")


@pytest.fixture(scope="session")
def train_set(real_data):
    """The real training set as the models see it: (60000, 784) float32 in [0, 1], int64 labels."""
    return scaled(real_data.train_images, real_data.train_labels)


@pytest.fixture(scope="session")
def test_set(real_data):
    """The real test set, scaled as train_set: (10000, 784) float32, int64 labels."""
    return scaled(real_data.test_images, real_data.test_labels)


def _threads():
    return [int(t) for t in os.listdir("/proc/self/task")]


@contextlib.contextmanager
def _pinned_to_one_core():
    """Every thread of this process (and every thread they start) on one CPU.

    sched_setaffinity(0, ...) would pin only the calling thread; thread pools
    that already exist (XLA's, torch's) are pinned one by one through their
    thread ids.  Linux only; elsewhere the library settings alone apply.
    """
    if not (hasattr(os, "sched_setaffinity") and os.path.isdir("/proc/self/task")):
        yield
        return
    saved = {}
    core = {min(os.sched_getaffinity(0))}
    for tid in _threads():
        try:
            saved[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, core)
        except OSError:  # the thread ended meanwhile
            pass
    try:
        yield
    finally:
        for tid, mask in saved.items():
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass
        # threads started while pinned inherited the one core: free them too
        everything = set().union(*saved.values())
        for tid in set(_threads()) - set(saved):
            try:
                os.sched_setaffinity(tid, everything)
            except OSError:
                pass


@pytest.fixture
def one_thread():
    """Hold every library we can reach to one thread for the benchmark."""
    import numba

    numba.set_num_threads(1)
    try:
        import torch
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    with threadpool_limits(1), _pinned_to_one_core():
        yield
    if torch is not None:
        torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def pytest_report_header(config):
    import platform

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [f"machine: {os.cpu_count()} cores, {cpu}, {platform.python_implementation()} "
            f"{platform.python_version()}",
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}"]


def _epoch_cell(item):
    """(H, B) of an epoch benchmark in test_epoch.py, None for any other test."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if item.module.__name__ != "test_epoch" or "H" not in params or "B" not in params:
        return None
    return params["H"], params["B"]


def pytest_collection_modifyitems(config, items):
    """Run each epoch cell's peers back to back: every peer of H=20 B=32, then of H=20 B=64...

    pytest's own order runs one peer through every cell before the next peer starts, so
    fastsoftmax's H=40 B=128 and JAX's ran minutes apart.  On this shared machine the
    same epoch's best of five moved by 0.74-1.28x between runs, and within a run the
    speed drifts over minutes as much, so a ratio of cells timed minutes apart measured
    the drift as much as the code.  Back to back, both sides of a ratio see the same
    machine.  The peers keep their order within a cell (the sort is stable); the
    other benchmarks keep their places.
    """
    slots = [i for i, item in enumerate(items) if _epoch_cell(item) is not None]
    cells = sorted((items[i] for i in slots), key=_epoch_cell)
    for i, item in zip(slots, cells):
        items[i] = item
