"""Evaluation: the forward pass of one or many models over a data set, in blocks of
samples, for the loss, the accuracy and the probabilities.

``_forward_blocks(X, table, weights, offs, hidden, K, alive, y, ce, correct, proba,
want_proba, tiles)`` runs M models over all N rows of X, in blocks of EVAL_BLOCK
samples.  Each block is gathered once for all models, and the first layer's product
runs once over their W1 side by side (the pack layout of :mod:`.epoch`); the rest
runs model by model.  Each model sees the operations it would see alone: its results
are bit-identical alone or among others.

- X and table: data rows and their table (layout.data_rows); weights 1-D: model m
  packed at offs[m] (see layout.packed_views) with hidden[m] hidden units (unpadded)
  and K classes;
- alive (M,) bool: models marked False are skipped, their outputs left as they are;
- with y given (length N): ce (M,) float64 out, the summed cross-entropy, and correct
  (M,) int64 out, the number of argmax predictions equal to y (y of length 0 leaves
  both as they are);
- with ``want_proba``: proba (M, N, K) out, the softmax probabilities;
- tiles: products._tiles for the model dtype, as a function pointer.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

from ..params import Params
from ._alloc import empty, zeros
from ._exp import exp_nonpositive
from ._tile import ROWS
from ._views import flat_view, grid_view
from .jit import jit
from .layout import (ORIGIN, _copy_columns, data_rows, n_features, pack, pad_features,
                     pad_hidden, pad_samples, packed_views)
from .products import tiles_pointer, with_tiles
from .steps import _gather, _input_product, _logits, _overwrite_coefs, \
    _relu_bias, _scratch, _squared_norm

NO_PROBA = np.bool_(False)  # _forward_blocks' want_proba, as the sweep passes it
WANT_PROBA = np.bool_(True)
EVAL_BLOCK = np.int64(42 * ROWS)  # samples per forward block when evaluating


@jit
def _forward_blocks(X, table, weights, offs, hidden, K, alive, y, ce, correct, proba, want_proba,
                    tiles):
    """Forward pass of M models over all rows of X: see the module docstring."""
    N, M, dt = X.shape[0], offs.shape[0], weights.dtype.type
    Dp = pad_features(n_features(X, table, weights))
    # The pack layout: model m's W1 in columns cols[m] .. cols[m] + hidden[m].
    cols = empty(M, np.int64)
    c = ORIGIN
    widest = -1
    for m in range(M):
        cols[m] = -1
        if alive[m]:
            cols[m] = c
            c += hidden[m]
            if widest < 0 or hidden[m] > hidden[widest]:
                widest = m
    if widest < 0:
        return
    Hw = pad_hidden(c)
    if M == 1:  # one model: its own W1 is the pack layout, no copy
        W1w = packed_views(weights, offs[0], Hw, Dp, K)[0]
    else:
        W1w = zeros((Dp, Hw), weights.dtype)
        for m in range(M):
            if cols[m] >= 0:
                W1 = packed_views(weights, offs[m], pad_hidden(hidden[m]), Dp, K)[0]
                _copy_columns(W1, ORIGIN, W1w, cols[m], hidden[m])
    Hmax = pad_hidden(hidden[widest])
    W1x, _, W2x, _ = packed_views(weights, offs[widest], Hmax, Dp, K)
    rows, Xb, Hd, Z, _, _, _ = _scratch(EVAL_BLOCK, W1x, W2x)
    Kp = Z.shape[1]  # the softmax's loop reads whole vectors of Z's padded classes
    zeros_c, ones_c = _overwrite_coefs(weights, max(Hw, Kp))
    Bp = Xb.shape[0]
    A = empty((Bp, Hw), weights.dtype)
    hd = flat_view(Hd)
    labelled = y.shape[0] > 0
    for m in range(M):
        if labelled and cols[m] >= 0:
            ce[m] = 0.0
            correct[m] = 0
    for start in range(0, N, EVAL_BLOCK):
        n = min(EVAL_BLOCK, N - start)
        for i in range(n):
            rows[i] = start + i
        _gather(X, table, rows, n, Xb)
        npad = pad_samples(n)
        _input_product(Xb, npad, W1w, Hw, A, zeros_c, ones_c, tiles)
        for m in range(M):
            if cols[m] < 0:
                continue
            Hp = pad_hidden(hidden[m])
            _, b1, W2, b2 = packed_views(weights, offs[m], Hp, Dp, K)
            Hm = grid_view(hd, Bp, Hp)
            _relu_bias(A, cols[m], npad, b1, hidden[m], Hm)
            _logits(Hm, npad, n, W2, b2, Z, zeros_c, ones_c, tiles)
            total, right = ce[m], correct[m]  # each model's sum runs row by row, in order
            for i in range(n):
                z = Z[i]
                top = z[0]
                best = 0
                for k in range(1, K):
                    if z[k] > top:
                        top = z[k]
                        best = k
                s = dt(0)
                for k in range(Kp):  # whole vectors, the padding selected away (_xent_grad)
                    e = exp_nonpositive(z[k] - top)
                    s += e if k < K else dt(0)
                if labelled:
                    label = y[start + i]
                    total += np.log(s) + top - z[label]
                    right += best == label
                if want_proba:
                    inv_s = 1 / s
                    for k in range(K):
                        proba[m, start + i, k] = exp_nonpositive(z[k] - top) * inv_s
            if labelled:
                ce[m] = total
                correct[m] = right




def forward_types(X, table, y, dtype) -> tuple:
    """_forward_blocks' argument types for data rows X and their ``table``
    (layout.data_rows), labels y (length 0: none) and models of ``dtype``, as the sweep
    passes them to take the kernel as a pointer: without probabilities (an empty proba,
    want_proba False)."""
    ints = types.Array(types.int64, 1, "C")
    return (numba.typeof(X), numba.typeof(table), types.Array(numba.from_dtype(np.dtype(dtype)),
            1, "C"), ints, ints, types.int64, types.Array(types.bool_, 1, "C"), numba.typeof(y),
            types.Array(types.float64, 1, "C"), ints,
            types.Array(numba.from_dtype(np.dtype(dtype)), 3, "C"), types.boolean,
            tiles_pointer(dtype))


_NO_LABELS = np.empty(0, np.int64)
_ONE_ALIVE = np.ones(1, np.bool_)  # one model, evaluated


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kernel version of :func:`fastsoftmax.reference.evaluate`."""
    weights, offs, hidden = pack([params])
    ce, correct = np.zeros(1), np.zeros(1, np.int64)
    with_tiles(_forward_blocks, params.dtype, *data_rows(X, params.dtype), weights, offs,
               hidden, params.shape[2], _ONE_ALIVE, np.asarray(y, np.int64), ce, correct,
               np.empty((0, 0, 0), params.dtype), NO_PROBA)
    value = ce[0] / X.shape[0]
    if alpha:
        W1, _, W2, _ = packed_views(weights, offs[0], pad_hidden(hidden[0]),
                                    pad_features(params.shape[0]), params.shape[2])
        value += 0.5 * alpha * (_squared_norm(W1) + _squared_norm(W2))
    return float(value), int(correct[0]) / X.shape[0]


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """Kernel version of :func:`fastsoftmax.reference.predict_proba`: (n, K)."""
    weights, offs, hidden = pack([params])
    proba = np.empty((1, X.shape[0], params.shape[2]), params.dtype)
    with_tiles(_forward_blocks, params.dtype, *data_rows(X, params.dtype), weights, offs,
               hidden, params.shape[2], _ONE_ALIVE, _NO_LABELS, np.zeros(1),
               np.zeros(1, np.int64), proba, WANT_PROBA)
    return proba[0]
