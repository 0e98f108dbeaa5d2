"""Model parameters, their seeded initialisation, and the seeded minibatch order.

The network is ``x -> h = relu(x W1 + b1) -> z = h W2 + b2 -> p = softmax(z)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_dtype, check_positive_int
from .host.atomic import atomic_open


class Params(NamedTuple):
    """Weights and biases of the two-layer network (also used for gradients).

    Attributes
    ----------
    W1 : ndarray, shape (n_inputs, n_hidden)
    b1 : ndarray, shape (n_hidden,)
    W2 : ndarray, shape (n_hidden, n_classes)
    b2 : ndarray, shape (n_classes,)

    All four share one floating dtype.  Both backends return fresh C-ordered
    arrays; the kernels work on padded copies of the same layout
    (:mod:`fastsoftmax.kernels.layout`).
    """

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return self.W1.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_inputs, n_hidden, n_classes)``."""
        return (self.W1.shape[0], self.W1.shape[1], self.W2.shape[1])

    def copy(self) -> "Params":
        return Params(*(a.copy() for a in self))

    def astype(self, dtype) -> "Params":
        return Params(*(np.asarray(a, dtype=dtype) for a in self))


def _seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for initialisation and for the minibatch order.

    Spawning from one SeedSequence keeps the two streams independent, so the
    order does not change when the hidden size (and so the number of draws
    for the weights) changes.
    """
    init_ss, order_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_ss), np.random.default_rng(order_ss)


def check_params(params, dtype: np.dtype | None = None, name: str = "params"):
    """Check that ``params`` is a consistent Params; convert to ``dtype`` if given."""
    try:
        W1, b1, W2, b2 = (np.asarray(a) for a in params)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a Params (W1, b1, W2, b2)") from None
    if W1.ndim != 2 or W2.ndim != 2 or b1.ndim != 1 or b2.ndim != 1 \
            or b1.shape[0] != W1.shape[1] or W2.shape[0] != W1.shape[1] \
            or b2.shape[0] != W2.shape[1]:
        raise ValueError(f"{name} has inconsistent shapes: W1 {W1.shape}, b1 {b1.shape}, "
                         f"W2 {W2.shape}, b2 {b2.shape}")
    if dtype is None:
        dtype = check_dtype(W1.dtype, f"{name}.W1.dtype")
    out = Params(*(a.astype(dtype, copy=False) for a in (W1, b1, W2, b2)))
    if not all(np.isfinite(a).all() for a in out):
        raise ValueError(f"{name} contains NaN or infinity")
    return out


def init_params(n_inputs: int, n_hidden: int, n_classes: int, *, seed: int = 0,
                dtype=np.float32) -> Params:
    """Seeded initialisation.

    ``W1 ~ N(0, 2 / n_inputs)`` (He scaling, suited to ReLU),
    ``W2 ~ N(0, 1 / n_hidden)`` (LeCun scaling for the linear softmax layer),
    biases zero.  The draws are made in float64 and rounded to ``dtype``, so
    float32 and float64 models start from the same numbers.

    Returns
    -------
    Params with W1 (n_inputs, n_hidden), b1 (n_hidden,), W2 (n_hidden, n_classes),
    b2 (n_classes,), all of ``dtype``.
    """
    dtype = check_dtype(dtype)
    n_inputs = check_positive_int(n_inputs, "n_inputs")
    n_hidden = check_positive_int(n_hidden, "n_hidden")
    n_classes = check_positive_int(n_classes, "n_classes")
    rng, _ = _seed_streams(seed)
    W1 = rng.standard_normal((n_inputs, n_hidden)) * np.sqrt(2.0 / n_inputs)
    W2 = rng.standard_normal((n_hidden, n_classes)) * np.sqrt(1.0 / n_hidden)
    return Params(W1.astype(dtype), np.zeros(n_hidden, dtype),
                  W2.astype(dtype), np.zeros(n_classes, dtype))


def minibatch_orders(n_samples: int, epochs: int, seed: int) -> np.ndarray:
    """The seeded visiting order of every epoch.

    Returns
    -------
    orders : ndarray of int64, shape (epochs, n_samples)
        Row ``e`` is a permutation of ``range(n_samples)``; minibatches are its
        consecutive slices.  Row ``e`` does not depend on ``epochs``, so a run
        of 5 epochs sees exactly the first 5 rows of a run of 20.
    """
    _, rng = _seed_streams(seed)
    orders = np.empty((epochs, n_samples), dtype=np.int64)
    for e in range(epochs):
        orders[e] = rng.permutation(n_samples)
    return orders


def save_params(path, params: Params) -> None:
    """Write params to a portable ``.npz`` (arrays W1, b1, W2, b2), atomically.

    The file is written next to ``path`` under a temporary name and renamed,
    so a crash never leaves a half-written file under the real name.
    """
    with atomic_open(path, "wb") as f:
        np.savez(f, **{name: np.ascontiguousarray(a) for name, a in params._asdict().items()})


# The most numbers a model file may hold, read from its arrays' headers before any is
# inflated: a few megabytes of deflated zeros can declare gigabytes.  2**28 (a GiB of
# float32) is far beyond this model class's sizes (784 x 100,000 hidden units is 2**26).
MAX_VALUES = 2**28


def _declared(f, names, refuse) -> None:
    """Check the headers of the archive ``f``'s members ``names`` (each ``name.npy``):
    no object arrays, and at most MAX_VALUES numbers in all; refuse(why) otherwise."""
    import zipfile

    total = 0
    for name in names:
        try:
            with f.zip.open(f"{name}.npy") as member:
                fmt = np.lib.format
                read = {(1, 0): fmt.read_array_header_1_0,
                        (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(member))
                if read is None:
                    raise ValueError("an .npy version numpy's own save does not write")
                shape, _, dtype = read(member)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise refuse(f"corrupt header of {name}: {exc}") from None
        if dtype.hasobject:
            raise refuse("holds object arrays, which only pickle reads; pickles are never "
                         "loaded")
        total += int(np.prod(shape, dtype=object))
    if total > MAX_VALUES:
        raise refuse(f"its arrays declare {total:,} numbers, more than a model file may hold "
                     f"({MAX_VALUES:,}); nothing was inflated")


def read_npz(path, what: str, required, optional=()) -> dict:
    """The arrays ``required`` (and those of ``optional`` present) of an ``.npz``, in memory.

    No pickle is ever loaded.  Anything that is not such an archive (another
    format, a pickle, a truncated or corrupt archive, object arrays, a member
    missing, arrays declaring more than MAX_VALUES numbers, checked before any is
    inflated) is a ValueError that names the file, says it is not ``what``, and why;
    a missing file stays FileNotFoundError.
    """
    import zipfile
    import zlib

    def refuse(why):
        return ValueError(f"{path}: not {what} ({why})")

    try:
        f = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except ValueError:  # np.load's guess for what is neither .npy nor .npz: a pickle
        raise refuse("neither an .npz archive nor a .npy file; pickles are never loaded") \
            from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise refuse(f"unreadable: {exc}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise refuse("a single .npy array, not an .npz archive")
    with f:
        missing = [k for k in required if k not in f.files]
        if missing:
            raise refuse(f"missing {', '.join(missing)}")
        names = (*required, *(k for k in optional if k in f.files))
        _declared(f, names, refuse)
        try:
            return {k: f[k] for k in names}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise refuse(f"corrupt: {exc}") from None


def load_params(path) -> Params:
    """Read params written by :func:`save_params` (no pickle is ever loaded).

    ValueError naming the file when it is not such a file (see :func:`read_npz`)
    or its arrays do not form a model.
    """
    arrays = read_npz(path, "a fastsoftmax params file", Params._fields)
    return check_params(Params(*(arrays[k] for k in Params._fields)), name=str(path))
