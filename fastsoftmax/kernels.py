"""Fused Numba kernels, and thin wrappers with the reference's names.

Internal layout (the "kernel form" of a Params):

- ``W1`` (Dp, Hp), C-ordered, so a row of hidden units is contiguous: the
  SIMD vectors of :mod:`fastsoftmax._tile` run along it;
- ``b1`` (Hp,), ``W2`` (Hp, K), ``b2`` (K,);
- ``Hp`` is the hidden size rounded up to a multiple of ``HIDDEN_TILE`` and
  ``Dp`` the number of features rounded up to a multiple of ``_tile.ROWS``.
  The extra hidden units and features have zero weights: an extra hidden unit
  has activation relu(0) = 0 and gradient 0, an extra feature is 0 in every
  sample, and L2 keeps 0 at 0, so padding is exact and the kernels need no
  tail code.  Minibatches are padded the same way, with zero samples whose
  loss weight and gradient are zero.

Each minibatch is first copied into a contiguous block ``Xb`` (np, Dp), so
both big products read rows at a fixed stride: the forward pass
``A = Xb W1`` and the update ``W1 = (1 - lr alpha) W1 - lr Xb^T dA`` are both
tiles of :func:`fastsoftmax._tile.tile2` (the gradient of W1 is never stored).

The private ``_`` kernels take only arrays and scalars of the model's dtype
and allocate only once per call (never per minibatch).  The public wrappers
(``loss_and_grads``, ``sgd_step``, ``train_epoch``, ``evaluate``,
``predict_proba``) mirror :mod:`fastsoftmax.reference` for testing.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .checks import pixels_to_float
from ._tile import ROWS, VECTOR_BYTES, tile1, tile1_tall, tile2
from .params import Params

SAMPLE_TILE = ROWS  # minibatches are padded to a multiple of the tile's rows
INV_255 = 1.0 / 255.0  # float64
HIDDEN_TILE = 8  # Hp is a multiple: whole float32 (8) and float64 (4) vectors
FEATURE_BLOCK = 128  # rows of W1 per forward block: 128 x 16 float32 = 8 KiB of L1


@jit
def pad_samples(n):
    """n rounded up to a multiple of SAMPLE_TILE (callable from Python and kernels)."""
    return -(-n // SAMPLE_TILE) * SAMPLE_TILE


@jit
def pad_features(n):
    """n rounded up to a multiple of the tile's rows (features are rows of the update)."""
    return -(-n // ROWS) * ROWS


def pad_hidden(n):
    return -(-n // HIDDEN_TILE) * HIDDEN_TILE


# --------------------------------------------------------------------------
# compiled building blocks


@jit
def _tiles(a, a_ss, a_sk, n_rows, b, b_sk, k, out, o_ss, width, beta, gamma):
    """out[r, j] = beta out[r, j] + gamma sum_k a[r a_ss + k a_sk] b[k b_sk + j].

    a, b, out: 1-D views of C-ordered arrays (offsets and strides in elements);
    r < n_rows (a multiple of ROWS), j < width (a multiple of the vector lanes).
    Two-vector tiles cover the width, a one-vector tile the rest.  Columns are
    the outer loop so one block of b serves every row tile while it is in cache.
    """
    lanes = VECTOR_BYTES // a.itemsize
    j = 0
    while j + 2 * lanes <= width:
        for r in range(0, n_rows, ROWS):
            tile2(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
        j += 2 * lanes
    if j < width:
        r = 0
        while r + 2 * ROWS <= n_rows:
            tile1_tall(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                       beta, gamma)
            r += 2 * ROWS
        if r < n_rows:
            tile1(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)


@jit
def _gather(X, table, rows, n, Xb):
    """Xb[i, :D] = X[rows[i]] for i < n; rows n .. pad_samples(n) of Xb zeroed.

    X: (N, D) of Xb's dtype with ``table`` None, or uint8 pixels with ``table``
    = pixel_table(Xb.dtype), read through it (numba compiles only the branch
    that applies).  Xb (>= pad_samples(n), Dp): columns D .. Dp stay zero.
    """
    D = X.shape[1]
    zero = Xb.dtype.type(0)
    for i in range(n):
        x = X[rows[i]]
        xb = Xb[i]
        if table is None:
            for d in range(D):
                xb[d] = x[d]
        elif Xb.itemsize == 4:
            # float32: rounding x * (1/255) computed in float64 gives exactly the
            # float32 quotient x / 255 for every pixel value (x / 255 is never
            # within 2^-33 of a float32 rounding boundary), and unlike the table
            # lookup it vectorises.  tests/test_kernels.py checks all 256 values.
            for d in range(D):
                xb[d] = x[d] * INV_255
        else:
            for d in range(D):
                xb[d] = table[x[d]]
    for i in range(n, pad_samples(n)):
        for d in range(Xb.shape[1]):
            Xb[i, d] = zero


@jit
def _forward(Xb, n, W1, b1, W2, b2, A, Z):
    """Hidden pre-activations and logits of the gathered samples ``Xb[:n]``.

    Xb: (>= pad_samples(n), Dp), rows past n zero
    A: (>= pad_samples(n), Hp) out, x W1 + b1      Z: (>= n, K) out, relu(A) W2 + b2
    """
    Dp, Hp = W1.shape
    K = W2.shape[1]
    npad = pad_samples(n)
    Xf, Wf, Af = Xb.ravel(), W1.ravel(), A.ravel()
    # Blocks of FEATURE_BLOCK rows of W1: each block's column tiles stay in L1
    # while every sample tile uses them (unblocked, W1 streamed from L2 per tile).
    for f in range(0, Dp, FEATURE_BLOCK):
        beta = W1.dtype.type(0) if f == 0 else W1.dtype.type(1)
        _tiles(Xf[f:], Dp, 1, npad, Wf[f * Hp:], Hp, min(FEATURE_BLOCK, Dp - f), Af, Hp, Hp,
               beta, W1.dtype.type(1))
    for i in range(n):
        for j in range(Hp):
            A[i, j] += b1[j]
        for k in range(K):
            Z[i, k] = b2[k]
        for j in range(Hp):
            h = A[i, j]
            if h > 0:  # relu: inactive units add nothing
                for k in range(K):
                    Z[i, k] += h * W2[j, k]


@jit
def _xent_grad(Z, y, rows, n, G):
    """Summed cross-entropy of ``Z[:n]`` and its gradient ``(p - onehot) / n``.

    Z: (>= n, K) logits, stable for any magnitude: exp() sees only z - max(z) <= 0.
    G: (>= pad_samples(n), K) out; rows n..pad_samples(n) are zeroed so padding adds nothing.
    Returns the sum (not the mean) of -log p[y] in float64.
    """
    K = Z.shape[1]
    # Typed constants come from the dtype, never from array contents, which
    # may be uninitialised scratch (NaN - NaN is not zero).
    inv_n = Z.dtype.type(1.0 / n)
    total = 0.0
    for i in range(n):
        m = Z[i, 0]
        for k in range(1, K):
            m = max(m, Z[i, k])
        s = Z.dtype.type(0)
        for k in range(K):
            e = np.exp(Z[i, k] - m)
            G[i, k] = e
            s += e
        label = y[rows[i]]
        total += np.log(s) + m - Z[i, label]
        inv_s = 1 / s
        for k in range(K):
            G[i, k] *= inv_s
        # d(-log p[y]) / dz = p - onehot(y): log-sum-exp gives p, -z[y] gives -onehot
        G[i, label] -= 1
        for k in range(K):
            G[i, k] *= inv_n
    for i in range(n, pad_samples(n)):
        for k in range(K):
            G[i, k] = 0
    return total


NORM_CHUNK = 1024  # elements summed in the array's dtype before joining the float64 total


@jit
def _squared_norm(W):
    """Sum of squares of W, as float64.

    Each chunk is summed in W's own dtype, which LLVM vectorises; widening every
    float32 element to float64 first made this per-minibatch pass over W1 cost
    as much as the cross-entropy.  The chunks join a float64 total.
    """
    w = W.ravel()
    total = 0.0
    for start in range(0, w.shape[0], NORM_CHUNK):
        s = w.dtype.type(0)
        for t in range(start, min(start + NORM_CHUNK, w.shape[0])):
            s += w[t] * w[t]
        total += s
    return total


@jit
def _backward(n, W2, alpha, A, G, dA, gb1, gW2, gb2):
    """Gradients of the minibatch loss, all but W1's, from A and G.

    A: (>= np, Hp) pre-activations, G: (>= np, K) d loss / d logits (zero past n),
    dA: (>= np, Hp) out, d loss / d pre-activations (zero past n); gb1 (Hp,),
    gW2 (Hp, K), gb2 (K,) out.  np = pad_samples(n).  W1's gradient,
    Xb^T dA + alpha W1, is applied by :func:`_w1_update` without being stored.
    """
    Hp, K = W2.shape
    zero = W2.dtype.type(0)
    for k in range(K):
        gb2[k] = zero
    for j in range(Hp):
        for k in range(K):
            gW2[j, k] = alpha * W2[j, k]
        gb1[j] = zero
    for i in range(pad_samples(n)):
        for k in range(K):
            gb2[k] += G[i, k]
        for j in range(Hp):
            a = A[i, j]
            if a > 0:
                # relu passes the gradient only where the unit was active
                s = zero
                for k in range(K):
                    gW2[j, k] += a * G[i, k]
                    s += G[i, k] * W2[j, k]
                dA[i, j] = s
                gb1[j] += s
            else:
                dA[i, j] = zero


@jit
def _w1_update(Xb, n, dA, W1, beta, gamma):
    """W1 = beta W1 + gamma Xb^T dA over the padded minibatch (np = pad_samples(n) rows).

    Training passes beta = 1 - lr alpha, gamma = -lr: the SGD step on W1 with
    its L2 term, the gradient never stored.  beta = 0, gamma = 1 writes the
    data part of the gradient into a buffer instead.
    Xb (>= np, Dp), dA (>= np, Hp), W1 (Dp, Hp).
    """
    Dp, Hp = W1.shape
    _tiles(Xb.ravel(), 1, Dp, Dp, dA.ravel(), Hp, pad_samples(n), W1.ravel(), Hp, Hp,
           beta, gamma)


@jit
def _small_update(lr, b1, W2, b2, gb1, gW2, gb2):
    """theta -= lr * grad for b1, W2, b2, in place."""
    for j in range(b1.shape[0]):
        b1[j] -= lr * gb1[j]
        for k in range(W2.shape[1]):
            W2[j, k] -= lr * gW2[j, k]
    for k in range(b2.shape[0]):
        b2[k] -= lr * gb2[k]


@jit
def _minibatch(X, table, y, rows, n, alpha, W1, b1, W2, b2, Xb, A, Z, G, dA, gb1, gW2, gb2):
    """Loss of the minibatch ``rows[:n]`` (float64); leaves Xb and dA for
    :func:`_w1_update` and the other gradients in gb1, gW2, gb2."""
    _gather(X, table, rows, n, Xb)
    _forward(Xb, n, W1, b1, W2, b2, A, Z)
    value = _xent_grad(Z, y, rows, n, G) / n
    if alpha != 0:
        value += 0.5 * alpha * (_squared_norm(W1) + _squared_norm(W2))
    _backward(n, W2, alpha, A, G, dA, gb1, gW2, gb2)
    return value


@jit
def _scratch(B, W1, K):
    """Per-call scratch for minibatches of up to B samples: rows, Xb, A, Z, G, dA."""
    Dp, Hp = W1.shape
    Bp = pad_samples(B)
    # Xb starts zeroed: its padding columns are never written and must stay 0.
    return (np.empty(Bp, np.int64), np.zeros((Bp, Dp), W1.dtype), np.empty((Bp, Hp), W1.dtype),
            np.empty((Bp, K), W1.dtype), np.empty((Bp, K), W1.dtype),
            np.empty((Bp, Hp), W1.dtype))


@jit
def _train_epoch(X, table, y, order, batch_size, lr, alpha, W1, b1, W2, b2):
    """One epoch of SGD in place on the kernel-form parameters.

    X (N, D) and table as for :func:`_gather`, y (N,) int64, order (N,) int64 permutation; lr, alpha of X's dtype.
    Returns (mean minibatch loss weighted by size, diverged).  On a non-finite
    loss it stops before that minibatch's update.
    """
    N = order.shape[0]
    B = min(batch_size, N)
    # Scratch, allocated once per epoch and reused by every minibatch.
    rows, Xb, A, Z, G, dA = _scratch(B, W1, W2.shape[1])
    gb1 = np.empty_like(b1)
    gW2 = np.empty_like(W2)
    gb2 = np.empty_like(b2)
    decay = 1 - lr * alpha
    total = 0.0
    for start in range(0, N, B):
        n = min(B, N - start)
        for i in range(n):
            rows[i] = order[start + i]
        value = _minibatch(X, table, y, rows, n, alpha, W1, b1, W2, b2, Xb, A, Z, G, dA,
                           gb1, gW2, gb2)
        if not np.isfinite(value):
            return np.nan, True
        total += value * n
        _w1_update(Xb, n, dA, W1, decay, -lr)
        _small_update(lr, b1, W2, b2, gb1, gW2, gb2)
    return total / N, False


@jit
def _loss_and_grads(X, table, y, alpha, W1, b1, W2, b2, gW1, gb1, gW2, gb2):
    """Loss (float64) and every gradient of one minibatch holding all of X."""
    n = X.shape[0]
    rows, Xb, A, Z, G, dA = _scratch(n, W1, W2.shape[1])
    for i in range(n):
        rows[i] = i
    value = _minibatch(X, table, y, rows, n, alpha, W1, b1, W2, b2, Xb, A, Z, G, dA,
                       gb1, gW2, gb2)
    _w1_update(Xb, n, dA, gW1, W1.dtype.type(0), W1.dtype.type(1))
    for d in range(W1.shape[0]):
        for j in range(W1.shape[1]):
            gW1[d, j] += alpha * W1[d, j]
    return value


EVAL_BLOCK = 42 * SAMPLE_TILE  # samples per forward block when evaluating


@jit
def _forward_blocks(X, table, W1, b1, W2, b2, y, P, want_proba):
    """Forward pass over all of X (N, D) in blocks; returns (summed CE, correct).

    X and table as for :func:`_gather`.
    With ``want_proba``, writes softmax probabilities into P (N, K); with y
    given (len N), accumulates cross-entropy and the number of correct argmax
    predictions (y of length 0 skips both).
    """
    N = X.shape[0]
    K = W2.shape[1]
    rows, Xb, A, Z, _, _ = _scratch(EVAL_BLOCK, W1, K)
    total = 0.0
    correct = 0
    for start in range(0, N, EVAL_BLOCK):
        n = min(EVAL_BLOCK, N - start)
        for i in range(n):
            rows[i] = start + i
        _gather(X, table, rows, n, Xb)
        _forward(Xb, n, W1, b1, W2, b2, A, Z)
        for i in range(n):
            m = Z[i, 0]
            best = 0
            for k in range(1, K):
                if Z[i, k] > m:
                    m = Z[i, k]
                    best = k
            s = Z.dtype.type(0)
            for k in range(K):
                s += np.exp(Z[i, k] - m)
            if y.shape[0] > 0:
                label = y[start + i]
                total += np.log(s) + m - Z[i, label]
                correct += best == label
            if want_proba:
                inv_s = 1 / s
                for k in range(K):
                    P[start + i, k] = np.exp(Z[i, k] - m) * inv_s
    return total, correct


# --------------------------------------------------------------------------
# conversion between Params and the kernel form


def to_kernel(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh kernel-form arrays (W1 (Dp, Hp), b1, W2, b2), zero-padded."""
    D, H, K = params.shape
    Dp, Hp = pad_features(D), pad_hidden(H)
    dtype = params.dtype
    W1 = np.zeros((Dp, Hp), dtype)
    W1[:D, :H] = params.W1
    b1 = np.zeros(Hp, dtype)
    b1[:H] = params.b1
    W2 = np.zeros((Hp, K), dtype)
    W2[:H] = params.W2
    return W1, b1, W2, np.array(params.b2, dtype=dtype, copy=True)


def from_kernel(W1, b1, W2, b2, n_features: int, n_hidden: int) -> Params:
    """Params (fresh arrays) from kernel form, padding dropped."""
    D, H = n_features, n_hidden
    return Params(W1[:D, :H].copy(), b1[:H].copy(), W2[:H].copy(), b2.copy())


# --------------------------------------------------------------------------
# wrappers with the reference's names (arrays already validated by callers)


def _scalar(params: Params, value: float):
    return params.dtype.type(value)


def pixel_table(dtype) -> np.ndarray:
    """The 256 values uint8 pixels stand for, (256,) of ``dtype``: exactly
    :func:`fastsoftmax.checks.pixels_to_float` of every pixel value."""
    return pixels_to_float(np.arange(256, dtype=np.uint8), np.dtype(dtype))


def table_for(X: np.ndarray, dtype):
    """pixel_table(dtype) for uint8 X, None for X already of ``dtype``."""
    return pixel_table(dtype) if X.dtype == np.uint8 else None


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray,
                   alpha: float) -> tuple[float, Params]:
    """Kernel version of :func:`fastsoftmax.reference.loss_and_grads`."""
    k = to_kernel(params)
    grads = tuple(np.empty_like(a) for a in k)
    value = _loss_and_grads(X, table_for(X, params.dtype), np.asarray(y, np.int64),
                            _scalar(params, alpha), *k, *grads)
    return float(value), from_kernel(*grads, *params.shape[:2])


def sgd_step(params: Params, X: np.ndarray, y: np.ndarray, learning_rate: float,
             alpha: float) -> tuple[float, Params]:
    """Kernel version of :func:`fastsoftmax.reference.sgd_step`."""
    n = X.shape[0]
    params, loss, _ = train_epoch(params, X, y, np.arange(n), n, learning_rate, alpha)
    return loss, params


def train_epoch(params: Params, X: np.ndarray, y: np.ndarray, order: np.ndarray,
                batch_size: int, learning_rate: float,
                alpha: float) -> tuple[Params, float, bool]:
    """Kernel version of :func:`fastsoftmax.reference.train_epoch`."""
    k = to_kernel(params)
    loss, diverged = _train_epoch(X, table_for(X, params.dtype), np.asarray(y, np.int64),
                                  np.asarray(order, np.int64),
                                  batch_size, _scalar(params, learning_rate),
                                  _scalar(params, alpha), *k)
    return from_kernel(*k, *params.shape[:2]), float(loss), bool(diverged)


_NO_LABELS = np.empty(0, np.int64)


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kernel version of :func:`fastsoftmax.reference.evaluate`."""
    k = to_kernel(params)
    total, correct = _forward_blocks(X, table_for(X, params.dtype), *k,
                                     np.asarray(y, np.int64),
                                     np.empty((0, 0), params.dtype), False)
    value = total / X.shape[0]
    if alpha:
        value += 0.5 * alpha * (_squared_norm(k[0]) + _squared_norm(k[2]))
    return float(value), correct / X.shape[0]


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """Kernel version of :func:`fastsoftmax.reference.predict_proba`: (n, K)."""
    k = to_kernel(params)
    P = np.empty((X.shape[0], params.shape[2]), params.dtype)
    _forward_blocks(X, table_for(X, params.dtype), *k, _NO_LABELS, P, True)
    return P
