"""The kernel form of a model: padded shapes, the packed layout of many models, and the
conversion from and to :class:`fastsoftmax.params.Params`.

- ``W1`` (Dp, Hp) and ``W2`` (Hp, Kp), C-ordered, so a row of hidden units
  (or of classes) is contiguous: the SIMD vectors of :mod:`._tile` run along it;
  ``b1`` (Hp,), ``b2`` (K,) (unpadded: it tells the kernels K);
- ``Dp``, ``Hp`` and ``Kp`` are the numbers of features, hidden units and
  classes rounded up to multiples of ``_tile.ROWS``, ``HIDDEN_TILE`` and
  ``CLASS_TILE``.  The extra ones have zero weights: an extra feature is 0 in
  every sample, an extra hidden unit has activation relu(0) = 0, an extra
  class has gradient 0 (the softmax runs over the K real ones), and L2 keeps
  0 at 0, so padding is exact and the kernels need no tail code.  Minibatches
  are padded the same way, with zero samples whose gradient is zero.
- Several models (a pack) lie end to end in one 1-D array, each as
  [W1, b1, W2, b2] (:func:`pack`, :func:`packed_views`); their optimiser state
  is packed the same way (:func:`pack_slots`).
"""

from __future__ import annotations

import numpy as np

from ..checks import pixels_to_float
from ..optimizers import Optimizer, OptimizerState
from ..params import Params
from ._tile import ROWS
from ._views import grid_view
from .jit import jit

SAMPLE_TILE = 2  # minibatches are padded to an even size: _tiles takes rows in pairs
HIDDEN_TILE = 8  # Hp is a multiple: whole float32 (8) and float64 (4) vectors
CLASS_TILE = 16  # Kp is a multiple: one two-vector float32 tile of logits
# A unit stride as a typed int64, not the literal 1, for which numba would
# compile _tiles once more.  The same for every constant a kernel passes to
# another: numba types a literal argument apart (Literal[int](0),
# Literal[bool](False)) and compiles the callee again for it, where a typed
# global shares the specialisation callers already compiled
# (tests/test_first_run.py checks the cache holds one of each).
UNIT = np.int64(1)
ORIGIN = np.int64(0)


@jit
def pad_samples(n):
    """n rounded up to a multiple of SAMPLE_TILE (callable from Python and kernels)."""
    return -(-n // SAMPLE_TILE) * SAMPLE_TILE


@jit
def pad_features(n):
    """n rounded up to a multiple of the tile's rows (features are rows of the update)."""
    return -(-n // ROWS) * ROWS


@jit
def pad_hidden(n):
    """n rounded up to a multiple of HIDDEN_TILE (callable from Python and kernels)."""
    return -(-n // HIDDEN_TILE) * HIDDEN_TILE


@jit
def pad_classes(n):
    """n rounded up to a multiple of CLASS_TILE (callable from Python and kernels)."""
    return -(-n // CLASS_TILE) * CLASS_TILE



@jit
def packed_size(Hp, Dp, K):
    """Length of one model packed as [W1, b1, W2, b2] (the kernel form's padded shapes)."""
    return Dp * Hp + Hp + Hp * pad_classes(K) + K


@jit
def packed_views(flat, off, Hp, Dp, K):
    """Kernel-form (W1, b1, W2, b2) views of one model packed in 1-D ``flat`` at ``off``."""
    Kp = pad_classes(K)
    W1 = grid_view(flat[off:off + Dp * Hp], Dp, Hp)
    off += Dp * Hp
    b1 = flat[off:off + Hp]
    off += Hp
    W2 = grid_view(flat[off:off + Hp * Kp], Hp, Kp)
    off += Hp * Kp
    return W1, b1, W2, flat[off:off + K]


@jit
def _copy_columns(src, s, dst, d, H):
    """dst[:, d:d + H] = src[:, s:s + H], both 2-D with the same number of rows.

    Loops rather than slice assignment: numba's shape check for that pulls in
    string formatting, seconds of a first run's compile.
    """
    for r in range(src.shape[0]):
        for j in range(H):
            dst[r, d + j] = src[r, s + j]



def to_kernel(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh kernel-form arrays W1 (Dp, Hp), b1 (Hp,), W2 (Hp, Kp), b2 (K,), zero-padded."""
    D, H, K = params.shape
    # The padding rules' Python functions: a call of a jitted function from Python
    # starts numba's CPU target and compiles it, which would hold back a first run's
    # second process, and these are plain integer arithmetic.
    Dp, Hp, Kp = pad_features.py_func(D), pad_hidden.py_func(H), pad_classes.py_func(K)
    dtype = params.dtype
    W1 = np.zeros((Dp, Hp), dtype)
    W1[:D, :H] = params.W1
    b1 = np.zeros(Hp, dtype)
    b1[:H] = params.b1
    W2 = np.zeros((Hp, Kp), dtype)
    W2[:H, :K] = params.W2
    return W1, b1, W2, np.array(params.b2, dtype=dtype, copy=True)


def from_kernel(W1, b1, W2, b2, n_features: int, n_hidden: int) -> Params:
    """Params (fresh arrays) from kernel form, padding dropped."""
    D, H, K = n_features, n_hidden, b2.shape[0]
    return Params(W1[:D, :H].copy(), b1[:H].copy(), W2[:H, :K].copy(), b2.copy())


# --------------------------------------------------------------------------
# wrappers with the reference's names (arrays already validated by callers)


def pixel_table(dtype) -> np.ndarray:
    """The 256 values uint8 pixels stand for, (256,) of ``dtype``: exactly
    :func:`fastsoftmax.checks.pixels_to_float` of every pixel value."""
    return pixels_to_float(np.arange(256, dtype=np.uint8), np.dtype(dtype))


def data_rows(X: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """X (N, D) as the kernels take it for models of ``dtype``: (rows, table).

    uint8 pixels give (X, pixel_table(dtype)); floats of ``dtype`` give their bytes,
    (N, D * itemsize) uint8, and an empty table (0,) of ``dtype``.  The kernels
    take both kinds of data under one type and tell them apart by the table
    (steps._gather): typed on X itself, every kernel compiled once for pixels
    and again for floats.  (A read-only X is typed apart too: callers copy it.)"""
    X = np.ascontiguousarray(X)
    if X.dtype == np.uint8:
        return X, pixel_table(dtype)
    if X.dtype != np.dtype(dtype):
        raise TypeError(f"data of {X.dtype} for models of {np.dtype(dtype)}")
    return X.view(np.uint8), np.empty(0, dtype)


@jit(inline="always")
def n_features(X, table, weights):
    """D, the features of data rows X with its ``table`` (see data_rows), for models
    whose weights are of weights' dtype."""
    return X.shape[1] if table.shape[0] > 0 else X.shape[1] // weights.itemsize


def offsets(sizes) -> np.ndarray:
    """Start of each of several blocks of the given sizes laid end to end, (n,) int64."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _flat(params: Params) -> np.ndarray:
    """One model in kernel form as one 1-D array [W1, b1, W2, b2] (see packed_views)."""
    return np.concatenate([a.ravel() for a in to_kernel(params)])


def pack(params: list[Params]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several models in kernel form laid end to end, as :func:`_train_epoch_many` reads them.

    Returns (state 1-D of the models' dtype, offs (P,) int64 where each model
    starts, hidden (P,) int64 hidden sizes); :func:`packed_views` of
    (state, offs[m], pad_hidden(hidden[m]), ...) gives model m's kernel-form arrays.
    """
    parts = [_flat(p) for p in params]
    hidden = np.array([p.shape[1] for p in params], np.int64)
    # One model (fs.evaluate, fs.predict_proba, fs.train) is its fresh flat array already.
    state = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return state, offsets([q.size for q in parts]), hidden


def unpack(flat: np.ndarray, off: int, shape) -> Params:
    """The model of ``shape`` = (n_features, n_hidden, n_classes) packed in ``flat``
    at ``off``, as Params (fresh arrays)."""
    D, H, K = shape
    return from_kernel(*packed_views(flat, off, pad_hidden(H), pad_features(D), K), D, H)


def pack_slots(params: list[Params], offs: np.ndarray, states: list[OptimizerState]
               ) -> np.ndarray:
    """The optimiser states of packed models, laid out as :func:`pack` lays the models.

    Returns (2, n) of the models' dtype, n the packed length: row j holds
    every model's slot j (zeros where a model keeps fewer); (2, 0) when no
    model keeps any state (plain SGD).
    """
    dtype = params[0].dtype
    if not any(st.slots for st in states):
        return np.zeros((2, 0), dtype)
    D, H, K = params[-1].shape
    n = int(offs[-1]) + int(packed_size(pad_hidden(H), pad_features(D), K))
    rows = np.zeros((2, n), dtype)
    for off, st in zip(offs, states):
        for j, slot in enumerate(st.slots):
            part = _flat(slot.astype(dtype))
            rows[j, off:off + part.size] = part
    return rows


def settings_of(optimizers: list[Optimizer]) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' (opts (P,) int64, settings (P, 4) float64) of P optimisers."""
    return (np.array([o.code for o in optimizers], np.int64),
            np.array([o.settings(np.float64) for o in optimizers]).reshape(-1, 4))
