"""Fused Numba kernels, and thin wrappers with the reference's names.

Internal layout (the "kernel form" of a Params):

- ``W1T`` (Hp, D): W1 transposed, C-ordered, so every dot product and every
  gradient row runs along the contiguous 784-long axis;
- ``b1`` (Hp,), ``W2`` (Hp, K), ``b2`` (K,);
- ``Hp`` is the hidden size rounded up to a multiple of ``HIDDEN_TILE``.  The extra
  hidden units have zero weights and bias: their activation is relu(0) = 0,
  their gradient is 0 and L2 keeps 0 at 0, so padding is exact and the
  kernels need no tail code.  Minibatches are padded the same way, with
  rows whose loss weight and gradient are zero.

The private ``_`` kernels take only arrays and scalars of the model's dtype
and allocate only once per call (never per minibatch).  The public wrappers
(``loss_and_grads``, ``sgd_step``, ``train_epoch``, ``evaluate``,
``predict_proba``) mirror :mod:`fastsoftmax.reference` for testing.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .params import Params

SAMPLE_TILE = 4  # samples per register tile; minibatches are padded to a multiple
HIDDEN_TILE = 2  # hidden units per register tile; Hp is a multiple


@jit
def pad_samples(n):
    """n rounded up to a multiple of SAMPLE_TILE (callable from Python and kernels)."""
    return -(-n // SAMPLE_TILE) * SAMPLE_TILE


def pad_hidden(n):
    return -(-n // HIDDEN_TILE) * HIDDEN_TILE


# --------------------------------------------------------------------------
# compiled building blocks


@jit
def _forward(X, rows, n, W1T, b1, W2, b2, A, Z):
    """Hidden pre-activations and logits of the samples ``X[rows[:n]]``.

    rows: (>= pad_samples(n),) int64, entries past n repeat a valid row
    A: (>= pad_samples(n), Hp) out, x W1 + b1      Z: (>= n, K) out, relu(A) W2 + b2
    """
    Hp, D = W1T.shape
    K = W2.shape[1]
    for i in range(0, n, SAMPLE_TILE):
        x0 = X[rows[i]]
        x1 = X[rows[i + 1]]
        x2 = X[rows[i + 2]]
        x3 = X[rows[i + 3]]
        for j in range(0, Hp, HIDDEN_TILE):
            # 4 samples x 2 hidden units: each loaded W1 value serves 4 dot
            # products.  8 vector accumulators keep both FMA pipes busy
            # without spilling AVX2's 16 registers (a 4x4 tile spilled and
            # ran at 2/3 of this speed).
            w0 = W1T[j]
            w1 = W1T[j + 1]
            a00 = a01 = a10 = a11 = W1T.dtype.type(0)
            a20 = a21 = a30 = a31 = a00
            for d in range(D):
                v0 = w0[d]
                v1 = w1[d]
                a00 += x0[d] * v0
                a01 += x0[d] * v1
                a10 += x1[d] * v0
                a11 += x1[d] * v1
                a20 += x2[d] * v0
                a21 += x2[d] * v1
                a30 += x3[d] * v0
                a31 += x3[d] * v1
            A[i, j] = a00 + b1[j]
            A[i, j + 1] = a01 + b1[j + 1]
            A[i + 1, j] = a10 + b1[j]
            A[i + 1, j + 1] = a11 + b1[j + 1]
            A[i + 2, j] = a20 + b1[j]
            A[i + 2, j + 1] = a21 + b1[j + 1]
            A[i + 3, j] = a30 + b1[j]
            A[i + 3, j + 1] = a31 + b1[j + 1]
    for i in range(n):
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


@jit
def _squared_norm(W):
    s = 0.0
    for v in W.ravel():
        s += v * v
    return s


@jit
def _backward(X, rows, n, W1T, W2, alpha, A, G, dA, gW1T, gb1, gW2, gb2):
    """Gradients of the minibatch loss (mean cross-entropy + L2) from A and G.

    A: (>= np, Hp) pre-activations, G: (>= np, K) d loss / d logits (zero past n),
    dA: (>= np, Hp) scratch; gW1T (Hp, D), gb1 (Hp,), gW2 (Hp, K), gb2 (K,) out.
    np = pad_samples(n).
    """
    Hp, D = W1T.shape
    K = W2.shape[1]
    npad = pad_samples(n)
    zero = W1T.dtype.type(0)
    for k in range(K):
        gb2[k] = zero
    for j in range(Hp):
        for k in range(K):
            gW2[j, k] = alpha * W2[j, k]
        gb1[j] = zero
    for i in range(npad):
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
    for j in range(0, Hp, HIDDEN_TILE):
        g0 = gW1T[j]
        g1 = gW1T[j + 1]
        w0 = W1T[j]
        w1 = W1T[j + 1]
        for d in range(D):
            g0[d] = alpha * w0[d]
            g1[d] = alpha * w1[d]
        for i in range(0, npad, SAMPLE_TILE):
            c00 = dA[i, j]
            c01 = dA[i + 1, j]
            c02 = dA[i + 2, j]
            c03 = dA[i + 3, j]
            c10 = dA[i, j + 1]
            c11 = dA[i + 1, j + 1]
            c12 = dA[i + 2, j + 1]
            c13 = dA[i + 3, j + 1]
            x0 = X[rows[i]]
            x1 = X[rows[i + 1]]
            x2 = X[rows[i + 2]]
            x3 = X[rows[i + 3]]
            # 2 gradient rows updated per pass over 4 sample rows, along
            # contiguous d.  Larger tiles measured no faster: this loop is
            # bound by the read-modify-write of the gradient rows.
            for d in range(D):
                u0 = x0[d]
                u1 = x1[d]
                u2 = x2[d]
                u3 = x3[d]
                g0[d] += c00 * u0 + c01 * u1 + c02 * u2 + c03 * u3
                g1[d] += c10 * u0 + c11 * u1 + c12 * u2 + c13 * u3


@jit
def _sgd_update(lr, W1T, b1, W2, b2, gW1T, gb1, gW2, gb2):
    """theta -= lr * grad for every parameter, in place."""
    W1 = W1T.ravel()
    g1 = gW1T.ravel()
    for t in range(W1.shape[0]):
        W1[t] -= lr * g1[t]
    for j in range(b1.shape[0]):
        b1[j] -= lr * gb1[j]
        for k in range(W2.shape[1]):
            W2[j, k] -= lr * gW2[j, k]
    for k in range(b2.shape[0]):
        b2[k] -= lr * gb2[k]


@jit
def _minibatch_loss_and_grads(X, y, rows, n, alpha, W1T, b1, W2, b2,
                              A, Z, G, dA, gW1T, gb1, gW2, gb2):
    """Loss of the minibatch ``rows[:n]`` (float64) and its gradient into g*."""
    _forward(X, rows, n, W1T, b1, W2, b2, A, Z)
    value = _xent_grad(Z, y, rows, n, G) / n
    if alpha != 0:
        value += 0.5 * alpha * (_squared_norm(W1T) + _squared_norm(W2))
    _backward(X, rows, n, W1T, W2, alpha, A, G, dA, gW1T, gb1, gW2, gb2)
    return value


@jit
def _train_epoch(X, y, order, batch_size, lr, alpha, W1T, b1, W2, b2):
    """One epoch of SGD in place on the kernel-form parameters.

    X (N, D), y (N,) int64, order (N,) int64 permutation; lr, alpha of X's dtype.
    Returns (mean minibatch loss weighted by size, diverged).  On a non-finite
    loss it stops before that minibatch's update.
    """
    N = order.shape[0]
    Hp, D = W1T.shape
    K = W2.shape[1]
    B = min(batch_size, N)
    Bp = pad_samples(B)
    # Scratch, allocated once per epoch and reused by every minibatch.
    rows = np.empty(Bp, np.int64)
    A = np.empty((Bp, Hp), X.dtype)
    Z = np.empty((Bp, K), X.dtype)
    G = np.empty((Bp, K), X.dtype)
    dA = np.empty((Bp, Hp), X.dtype)
    gW1T = np.empty_like(W1T)
    gb1 = np.empty_like(b1)
    gW2 = np.empty_like(W2)
    gb2 = np.empty_like(b2)
    total = 0.0
    for start in range(0, N, B):
        n = min(B, N - start)
        for i in range(n):
            rows[i] = order[start + i]
        for i in range(n, pad_samples(n)):
            rows[i] = rows[0]
        value = _minibatch_loss_and_grads(X, y, rows, n, alpha, W1T, b1, W2, b2,
                                          A, Z, G, dA, gW1T, gb1, gW2, gb2)
        if not np.isfinite(value):
            return np.nan, True
        total += value * n
        _sgd_update(lr, W1T, b1, W2, b2, gW1T, gb1, gW2, gb2)
    return total / N, False


EVAL_BLOCK = 256  # samples per forward block when evaluating


@jit
def _forward_blocks(X, W1T, b1, W2, b2, y, P, want_proba):
    """Forward pass over all of X (N, D) in blocks; returns (summed CE, correct).

    With ``want_proba``, writes softmax probabilities into P (N, K); with y
    given (len N), accumulates cross-entropy and the number of correct argmax
    predictions (y of length 0 skips both).
    """
    N = X.shape[0]
    Hp = W1T.shape[0]
    K = W2.shape[1]
    rows = np.empty(EVAL_BLOCK, np.int64)
    A = np.empty((EVAL_BLOCK, Hp), X.dtype)
    Z = np.empty((EVAL_BLOCK, K), X.dtype)
    total = 0.0
    correct = 0
    for start in range(0, N, EVAL_BLOCK):
        n = min(EVAL_BLOCK, N - start)
        for i in range(n):
            rows[i] = start + i
        for i in range(n, pad_samples(n)):
            rows[i] = start
        _forward(X, rows, n, W1T, b1, W2, b2, A, Z)
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
    """Fresh kernel-form arrays (W1T, b1, W2, b2) with Hp = pad_hidden(H) rows."""
    D, H, K = params.shape
    Hp = pad_hidden(H)
    dtype = params.dtype
    W1T = np.zeros((Hp, D), dtype)
    W1T[:H] = params.W1.T
    b1 = np.zeros(Hp, dtype)
    b1[:H] = params.b1
    W2 = np.zeros((Hp, K), dtype)
    W2[:H] = params.W2
    return W1T, b1, W2, np.array(params.b2, dtype=dtype, copy=True)


def from_kernel(W1T, b1, W2, b2, n_hidden: int) -> Params:
    """Params from kernel form; W1 is a Fortran-ordered (D, H) transpose view."""
    H = n_hidden
    if W1T.shape[0] != H:
        W1T = W1T[:H].copy()
    return Params(W1T.T, b1[:H].copy(), W2[:H].copy(), b2.copy())


# --------------------------------------------------------------------------
# wrappers with the reference's names (arrays already validated by callers)


def _scalar(params: Params, value: float):
    return params.dtype.type(value)


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray,
                   alpha: float) -> tuple[float, Params]:
    """Kernel version of :func:`fastsoftmax.reference.loss_and_grads`."""
    n = X.shape[0]
    k = to_kernel(params)
    Hp, K = k[2].shape
    rows = np.zeros(pad_samples(n), np.int64)
    rows[:n] = np.arange(n)
    A, dA = (np.empty((pad_samples(n), Hp), X.dtype) for _ in range(2))
    Z, G = (np.empty((pad_samples(n), K), X.dtype) for _ in range(2))
    grads = tuple(np.empty_like(a) for a in k)
    value = _minibatch_loss_and_grads(X, np.asarray(y, np.int64), rows, n,
                                      _scalar(params, alpha), *k, A, Z, G, dA, *grads)
    return float(value), from_kernel(*grads, params.shape[1])


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
    loss, diverged = _train_epoch(X, np.asarray(y, np.int64), np.asarray(order, np.int64),
                                  batch_size, _scalar(params, learning_rate),
                                  _scalar(params, alpha), *k)
    return from_kernel(*k, params.shape[1]), float(loss), bool(diverged)


_NO_LABELS = np.empty(0, np.int64)


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kernel version of :func:`fastsoftmax.reference.evaluate`."""
    k = to_kernel(params)
    total, correct = _forward_blocks(X, *k, np.asarray(y, np.int64),
                                     np.empty((0, 0), X.dtype), False)
    value = total / X.shape[0]
    if alpha:
        value += 0.5 * alpha * (_squared_norm(k[0]) + _squared_norm(k[2]))
    return float(value), correct / X.shape[0]


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """Kernel version of :func:`fastsoftmax.reference.predict_proba`: (n, K)."""
    k = to_kernel(params)
    P = np.empty((X.shape[0], params.shape[2]), X.dtype)
    _forward_blocks(X, *k, _NO_LABELS, P, True)
    return P
