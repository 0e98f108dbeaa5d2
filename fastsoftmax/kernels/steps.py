"""The compiled blocks a training step is made of: the gather, the forward pass, the
softmax cross-entropy and its gradient, the backward pass, the updates and the
optimiser rules; and :func:`_loss_and_grads`, one whole step's gradients.

A block that only the training kernels call (the backward pass, the cross-entropy,
the norms, the W2 and bias updates, the optimiser rules, the prefetch) is inlined into
them (inline="always").  Numba compiles a called function as a library of its own,
optimises it and emits its machine code, then links it into each caller and optimises
and emits it there again; inlined, it is compiled once, in the kernel.  Blocks that
the evaluation kernel shares (the gather, the scratch, the packed views) stay called
by name: inlining them too made the two first compiles slower.  Arrays are viewed
flat or as rows x cols with _views (flat_view, grid_view), not ravel/reshape, whose
generic checks numba lowers again at every call site.  New arrays come from _alloc's
intrinsics, not np.empty/np.zeros/np.ones/np.full, which numba compiles as functions
of their own for every (shape, dtype) and caller's flags.  (docs/speed.md has the
compile times that decided each of these.)
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

from ..optimizers import ADAM, NESTEROV
from ..params import Params
from ._alloc import empty, zeros
from ._exp import exp_nonpositive
from ._prefetch import CACHE_LINE, prefetch
from ._views import flat_view
from .jit import jit
from .layout import ORIGIN, UNIT, data_rows, from_kernel, pad_samples, to_kernel
from .products import with_tiles

INV_255 = 1.0 / 255.0  # float64
FEATURE_BLOCK = 128  # rows of W1 per forward block: 128 x 16 float32 = 8 KiB of L1
# Rows of W1 per block of its update (_w1_product): in one pass, each 16-column strip
# read all of Xb again, which with the next minibatch's prefetched rows outgrew L2
# at B = 128; a block's features of Xb stay in L2 across its strips (docs/speed.md).
W1_ROW_BLOCK = 192



@jit
def _gather(X, table, rows, n, Xb):
    """Xb[i, :D] = the features of data row rows[i], for i < n; rows n ..
    pad_samples(n) of Xb zeroed.

    X, table: data rows and their table (layout.data_rows): uint8 pixels, with
    ``table`` = pixel_table(Xb.dtype) the values they are given, or with an empty
    table the bytes of rows of Xb's dtype.  Xb (>= pad_samples(n), Dp): columns
    D .. Dp stay zero.
    """
    zero = Xb.dtype.type(0)
    if table.shape[0] == 0:
        F = X.view(Xb.dtype)
        for i in range(n):
            x = F[rows[i]]
            xb = Xb[i]
            for d in range(F.shape[1]):
                xb[d] = x[d]
    else:
        for i in range(n):
            x = X[rows[i]]
            xb = Xb[i]
            if Xb.itemsize == 4:
                # float32: rounding x * (1/255) computed in float64 gives exactly the
                # float32 quotient x / 255 for every pixel value (x / 255 is never
                # within 2^-33 of a float32 rounding boundary), and unlike the table
                # lookup it vectorises.  tests/test_kernels.py checks all 256 values.
                for d in range(X.shape[1]):
                    xb[d] = x[d] * INV_255
            else:
                for d in range(X.shape[1]):
                    xb[d] = table[x[d]]
    for i in range(n, pad_samples(n)):
        for d in range(Xb.shape[1]):
            Xb[i, d] = zero


def gather_types(X, table, dtype) -> tuple:
    """The argument types of the kernels' _gather calls for data rows X and their
    ``table`` (see layout.data_rows) and models of ``dtype``: the rows and the block come from
    :func:`_scratch`.  The sweep compiles _gather for them ahead of the epoch kernel
    (fastsoftmax.sweep.engine.run_plan)."""
    return (numba.typeof(X), numba.typeof(table), types.Array(types.int64, 1, "C"), types.int64,
            types.Array(numba.from_dtype(np.dtype(dtype)), 2, "C"))


@jit(inline="always")
def _prefetch_rows(X, y, order, start, stop):
    """Ask the caches for the rows X[order[start:stop]] and their labels in y (hides DRAM
    latency; no effect on results)."""
    flat = flat_view(X)
    D = X.shape[1]
    step = max(1, CACHE_LINE // X.itemsize)
    for t in range(start, min(stop, order.shape[0])):
        base = order[t] * D
        for e in range(0, D, step):
            prefetch(flat, base + e)
        prefetch(y, order[t])


@jit(inline="always")
def _input_product(Xb, npad, W1, width, A, zeros_c, ones_c, tiles):
    """A[:npad, :width] = Xb[:npad] W1[:, :width], without the bias.

    Xb: (>= npad, Dp); W1: (Dp, Wd) and A: (>= npad, Wd), C-ordered, Wd >= width
    (a multiple of HIDDEN_TILE); zeros_c, ones_c from :func:`_overwrite_coefs`, at
    least width long.  Each output is the same chain of multiply-adds
    over the features whatever Wd, width and its column are, so a model's
    columns give the same bits alone or among a pack's (see _train_epoch_many).
    """
    Dp, Wd = W1.shape
    Xf, Wf, Af = flat_view(Xb), flat_view(W1), flat_view(A)
    # Blocks of FEATURE_BLOCK rows of W1, so each block's column tiles stay in L1
    # while every sample tile uses them.  It is meant for layers whose W1 outgrows
    # L2 (about H > 160 in float32); where W1 fits in L2 it costs nothing.
    for f in range(0, Dp, FEATURE_BLOCK):
        beta = zeros_c if f == 0 else ones_c
        tiles(Xf[f:], Dp, UNIT, npad, Wf[f * Wd:], Wd, min(FEATURE_BLOCK, Dp - f), Af, Wd,
              width, beta, ones_c)


@jit(inline="always")
def _relu_bias(A, c, npad, b1, H, Hd):
    """Hd[i, j] = relu(A[i, c + j] + b1[j]) for j < H, 0 for H <= j < Hd's width; i < npad.

    Padded rows too: they meet zero gradients later.  A may be Hd itself (c = 0,
    H its width: in place, as one model's forward pass), or a pack's
    product (c the model's first column).
    """
    zero = Hd.dtype.type(0)
    for i in range(npad):
        for j in range(H):
            Hd[i, j] = max(A[i, c + j] + b1[j], zero)
        for j in range(H, Hd.shape[1]):
            Hd[i, j] = zero


@jit(inline="always")
def _logits(Hd, npad, n, W2, b2, Z, zeros_c, ones_c, tiles):
    """Z[:n, :K] = Hd W2 + b2 (K = len(b2)); Hd (>= npad, Hp), W2 (Hp, Kp), Z (>= npad, Kp);
    zeros_c, ones_c from :func:`_overwrite_coefs`, at least Kp long."""
    Hp, Kp = W2.shape
    tiles(flat_view(Hd), Hp, UNIT, npad, flat_view(W2), Kp, Hp, flat_view(Z), Kp, Kp,
          zeros_c, ones_c)
    for i in range(n):
        for k in range(b2.shape[0]):
            Z[i, k] += b2[k]


@jit
def _forward(Xb, n, W1, b1, W2, b2, Hd, Z, zeros_c, ones_c, tiles):
    """Hidden activations and logits of the gathered samples ``Xb[:n]``.

    Xb: (>= np, Dp), rows past n zero; np = pad_samples(n)
    Hd: (>= np, Hp) out, relu(x W1 + b1)
    Z: (>= np, Kp) out, Hd W2 + b2 in its first K = len(b2) columns for rows < n
    zeros_c, ones_c: from :func:`_overwrite_coefs`, at least max(Hp, Kp) long
    tiles: :func:`_tiles`, as a function pointer (see :func:`tiles_pointer`)
    """
    Hp = W1.shape[1]
    npad = pad_samples(n)
    _input_product(Xb, npad, W1, Hp, Hd, zeros_c, ones_c, tiles)
    _relu_bias(Hd, ORIGIN, npad, b1, Hp, Hd)
    _logits(Hd, npad, n, W2, b2, Z, zeros_c, ones_c, tiles)


@jit(inline="always")
def _xent_grad(Z, K, labels, n, G):
    """Summed cross-entropy of the logits ``Z[:n, :K]`` and its gradient ``(p - onehot) / n``.

    Stable for any magnitude: exp() sees only z - max(z) <= 0 in the K real columns.
    Z: (>= n, >= Kp); its columns K .. Kp are read too (whole vectors) and their exp
    discarded, so they may hold anything.  labels (>= n,) int64: row i's class.
    G: (>= pad_samples(n), Kp) out; everything past row n or column K is zeroed,
    so padding adds nothing downstream.  Returns the sum (not the mean) of
    -log p[y] in float64.
    """
    Kp = G.shape[1]
    # Typed constants come from the dtype, never from array contents, which
    # may be uninitialised scratch (NaN - NaN is not zero).
    zero = Z.dtype.type(0)
    inv_n = Z.dtype.type(1.0 / n)
    total = 0.0
    for i in range(n):
        m = Z[i, 0]
        for k in range(1, K):
            m = max(m, Z[i, k])
        # Over all Kp columns, the padding's exp selected away (its logits are 0, which
        # may exceed m): whole vectors, where a loop over the K = 10 classes left 8 + 2,
        # and exp_nonpositive has no call, so the loop vectorises.
        s = zero
        for k in range(Kp):
            e = exp_nonpositive(Z[i, k] - m)
            e = e if k < K else zero
            G[i, k] = e
            s += e
        label = labels[i]
        total += np.log(s) + m - Z[i, label]
        inv_s = 1 / s
        for k in range(Kp):
            G[i, k] *= inv_s
        # d(-log p[y]) / dz = p - onehot(y): log-sum-exp gives p, -z[y] gives -onehot
        G[i, label] -= 1
        for k in range(Kp):
            G[i, k] *= inv_n
    for i in range(n, pad_samples(n)):
        for k in range(Kp):
            G[i, k] = zero
    return total


NORM_CHUNK = 1024  # elements summed in the array's dtype before joining the float64 total


@jit(inline="always")
def _squared_norm(W):
    """Sum of squares of W, as float64.

    Each chunk is summed in W's own dtype, which LLVM vectorises; widening every
    float32 element to float64 first made this per-minibatch pass over W1 cost
    as much as the cross-entropy.  The chunks join a float64 total.
    """
    w = flat_view(W)
    total = 0.0
    for start in range(0, w.shape[0], NORM_CHUNK):
        s = w.dtype.type(0)
        for t in range(start, min(start + NORM_CHUNK, w.shape[0])):
            s += w[t] * w[t]
        total += s
    return total


@jit(inline="always")
def _columns_norm(sq, c, H):
    """Sum of the column sums of squares sq[c:c + H] (from _tile.square_sums), in order,
    as float64: a model's squared W1 norm, out of the pack-layout W1's sums."""
    total = 0.0
    for j in range(c, c + H):
        total += sq[j]
    return total


@jit(inline="always")
def _backward(n, Hd, G, W2, W2T, dA, gb1, gb2, zeros_c, ones_c, tiles):
    """d loss / d pre-activations and the bias gradients, from Hd and G.

    Hd: (>= np, Hp) activations, G: (>= np, Kp) d loss / d logits (zero past n
    and past K); W2T (Kp, Hp) scratch; dA (>= np, Hp), gb1 (Hp,), gb2 (K,) out;
    zeros_c, ones_c from :func:`_overwrite_coefs`, at least Hp long.
    np = pad_samples(n).  The weight gradients, Xb^T dA and Hd^T G plus the L2
    terms, are applied by :func:`_w1_update` and :func:`_w2_update` unstored.
    """
    Hp, Kp = W2.shape
    K = gb2.shape[0]
    npad = pad_samples(n)
    zero = W2.dtype.type(0)
    for j in range(Hp):
        for k in range(K):
            W2T[k, j] = W2[j, k]
    # dA = G W2^T over the K real classes, then relu passes it only where a unit was active
    tiles(flat_view(G), Kp, UNIT, npad, flat_view(W2T), Hp, K, flat_view(dA), Hp, Hp, zeros_c,
          ones_c)
    for j in range(Hp):
        gb1[j] = zero
    for k in range(K):
        gb2[k] = zero
    for i in range(npad):
        for j in range(Hp):
            # A select and a plain store: written as a conditional store, LLVM made it
            # a masked store and a masked load of the same vector, which AMD cores
            # cannot forward.
            d = zero if Hd[i, j] <= 0 else dA[i, j]
            dA[i, j] = d
            gb1[j] += d
        for k in range(K):
            gb2[k] += G[i, k]


@jit(inline="always")
def _w1_product(Xf, Dp, npad, dAf, d_ss, Wf, w_ss, width, beta, gamma, tiles):
    """W[:, :width] = beta W + gamma Xb^T dA, for W1 and its gradients.

    Xf: Xb (>= npad, Dp) viewed flat; dAf: dA flat, rows d_ss apart (>= npad rows);
    Wf: W (Dp, >= width) flat, rows w_ss apart; beta, gamma one value per column.
    In blocks of W1_ROW_BLOCK rows of W (features), each block's column strips
    in turn: every output is the same tile's sum over the samples as in one pass,
    so the bits are those of one _tiles call over all Dp rows.
    """
    for r0 in range(0, Dp, W1_ROW_BLOCK):
        tiles(Xf[r0:], UNIT, Dp, min(W1_ROW_BLOCK, Dp - r0), dAf, d_ss, npad, Wf[r0 * w_ss:],
              w_ss, width, beta, gamma)


@jit
def _w1_update(Xb, n, dA, W1, beta, gamma, tiles):
    """W1 = beta W1 + gamma Xb^T dA over the padded minibatch (np = pad_samples(n) rows).

    beta, gamma: 1-D, one value per column of W1 (at least Hp long).  beta = 0,
    gamma = 1 writes the data part of the gradient into a buffer
    (:func:`_loss_and_grads`); beta = 1 - lr alpha, gamma = -lr would be the SGD
    step with its L2 term.  Training runs that product itself, over a pack's
    pack-layout W1 (:func:`_train_epoch_many`).
    Xb (>= np, Dp), dA (>= np, Hp), W1 (Dp, Hp).
    """
    Dp, Hp = W1.shape
    _w1_product(flat_view(Xb), Dp, pad_samples(n), flat_view(dA), Hp, flat_view(W1), Hp, Hp, beta,
                gamma, tiles)


@jit(inline="always")
def _w2_update(Hd, n, G, W2, beta, gamma, tiles):
    """W2 = beta W2 + gamma Hd^T G, as :func:`_w1_update` (rows are hidden units;
    beta and gamma at least Kp long).

    Hd (>= np, Hp), G (>= np, Kp), W2 (Hp, Kp).
    """
    Hp, Kp = W2.shape
    tiles(flat_view(Hd), UNIT, Hp, Hp, flat_view(G), Kp, pad_samples(n), flat_view(W2), Kp, Kp,
          beta, gamma)


@jit(inline="always")
def _bias_update(lr, b1, b2, gb1, gb2):
    """b -= lr * grad for both biases, in place."""
    for j in range(b1.shape[0]):
        b1[j] -= lr * gb1[j]
    for k in range(b2.shape[0]):
        b2[k] -= lr * gb2[k]


@jit
def _scratch(B, W1, W2):
    """Per-call scratch for minibatches of up to B samples: rows, Xb, Hd, Z, G, dA, W2T."""
    Dp, Hp = W1.shape
    Kp = W2.shape[1]
    Bp = pad_samples(B)
    dt = W1.dtype
    # Xb starts zeroed: its padding columns are never written and must stay 0.
    return (empty(Bp, np.int64), zeros((Bp, Dp), dt), empty((Bp, Hp), dt),
            empty((Bp, Kp), dt), empty((Bp, Kp), dt), empty((Bp, Hp), dt),
            empty((Kp, Hp), dt))


@jit(inline="always")
def _overwrite_coefs(like, width):
    """zeros_c, ones_c (width,) of ``like``'s dtype: beta = 0 and gamma = 1 for each
    column, the coefficients of a product that overwrites its output.

    Every product passes _tiles one coefficient per column, these constants too,
    so _tiles has one specialisation per dtype: the pack's W1 update needs them per
    column, and a second, scalar specialisation would add to a first run's compile.
    """
    zeros_c = zeros(width, like.dtype)
    ones_c = empty(width, like.dtype)
    for j in range(width):
        ones_c[j] = like.dtype.type(1)
    return zeros_c, ones_c


@jit(inline="always")
def _load_minibatch(X, table, y, order, start, B, rows, labels, Xb):
    """Gather the minibatch ``order[start:start + B]`` into Xb (its row numbers into
    ``rows``, its labels from y into ``labels``) and prefetch the next one's rows and
    labels; returns its size n."""
    n = min(B, order.shape[0] - start)
    # The labels are read here, in a loop of independent loads, rather than one at a
    # time in the cross-entropy's loop, where each random read of y stalled it.
    for i in range(n):
        r = order[start + i]
        rows[i] = r
        labels[i] = y[r]
    _gather(X, table, rows, n, Xb)
    # the next minibatch's rows and labels travel from memory while this one trains
    _prefetch_rows(X, y, order, start + B, start + 2 * B)
    return n


@jit(inline="always")
def _optimizer_coefs(w, lr, settings, t):
    """The constants of one step of a rule (see :func:`_optimizer_rule`), of w's dtype.

    settings (4,) float64: momentum, beta1, beta2, epsilon; t: the step count
    including this step (Adam's bias corrections).
    """
    dt = w.dtype.type
    # Bias corrections in float64, then rounded, as torch.optim.Adam does.
    return (dt(settings[0]), dt(settings[1]), dt(settings[2]), dt(settings[3]),
            dt(float(lr) / (1.0 - settings[1] ** t)), dt(np.sqrt(1.0 - settings[2] ** t)))


@jit(inline="always")
def _optimizer_rule(opt, w, g, s1, s2, lr, l2, coefs):
    """One step of momentum, Nesterov momentum or Adam, element by element, in place.

    The rules of :mod:`fastsoftmax.optimizers` (and of reference.update).
    w, g, s1, s2: 1-D of one length: weights, the data part of their gradient,
    and the state (v for momentum; m and v for Adam; s2 unused by momentum).
    ``l2 w`` joins the gradient (alpha for W1 and W2, 0 for biases); lr, l2 of
    the model dtype; coefs from :func:`_optimizer_coefs`.  Zero weights with
    zero gradients get zero state and a zero step (Adam: 0 / (0 + eps)), so
    padding stays zero.
    """
    mu, b1, b2, eps, step_size, bc2_sqrt = coefs
    one = w.dtype.type(1)
    c1, c2 = one - b1, one - b2
    if opt == ADAM:
        for i in range(w.shape[0]):
            gi = g[i] + l2 * w[i]
            m = b1 * s1[i] + c1 * gi
            v = b2 * s2[i] + c2 * gi * gi
            s1[i] = m
            s2[i] = v
            w[i] -= step_size * m / (np.sqrt(v) / bc2_sqrt + eps)
    elif opt == NESTEROV:
        for i in range(w.shape[0]):
            gi = g[i] + l2 * w[i]
            v = mu * s1[i] + gi
            s1[i] = v
            w[i] -= lr * (gi + mu * v)
    else:  # MOMENTUM
        for i in range(w.shape[0]):
            gi = g[i] + l2 * w[i]
            v = mu * s1[i] + gi
            s1[i] = v
            w[i] -= lr * v



@jit
def _loss_and_grads(X, table, y, alpha, W1, b1, W2, b2, gW1, gb1, gW2, gb2, tiles):
    """Loss (float64) and every gradient of one minibatch holding all of X (tiles: _tiles,
    as a function pointer)."""
    n = X.shape[0]
    rows, Xb, Hd, Z, G, dA, W2T = _scratch(n, W1, W2)
    zeros_c, ones_c = _overwrite_coefs(W1, max(W1.shape[1], W2.shape[1]))
    for i in range(n):
        rows[i] = i
    _gather(X, table, rows, n, Xb)
    _forward(Xb, n, W1, b1, W2, b2, Hd, Z, zeros_c, ones_c, tiles)
    value = _xent_grad(Z, b2.shape[0], y, n, G) / n
    value += 0.5 * alpha * (_squared_norm(W1) + _squared_norm(W2))
    _backward(n, Hd, G, W2, W2T, dA, gb1, gb2, zeros_c, ones_c, tiles)
    _w1_update(Xb, n, dA, gW1, zeros_c, ones_c, tiles)
    _w2_update(Hd, n, G, gW2, zeros_c, ones_c, tiles)
    gW1 += alpha * W1
    gW2 += alpha * W2
    return value


def _scalar(params: Params, value: float):
    return params.dtype.type(value)



def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray,
                   alpha: float) -> tuple[float, Params]:
    """Kernel version of :func:`fastsoftmax.reference.loss_and_grads`."""
    k = to_kernel(params)
    grads = tuple(np.empty_like(a) for a in k)
    value = with_tiles(_loss_and_grads, params.dtype, *data_rows(X, params.dtype),
                       np.asarray(y, np.int64), _scalar(params, alpha), *k, *grads)
    return float(value), from_kernel(*grads, *params.shape[:2])

