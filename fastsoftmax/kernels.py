"""Fused Numba kernels, and thin wrappers with the reference's names.

Internal layout (the "kernel form" of a Params):

- ``W1`` (Dp, Hp) and ``W2`` (Hp, Kp), C-ordered, so a row of hidden units
  (or of classes) is contiguous: the SIMD vectors of :mod:`fastsoftmax._tile`
  run along it; ``b1`` (Hp,), ``b2`` (K,) (unpadded: it tells the kernels K);
- ``Dp``, ``Hp`` and ``Kp`` are the numbers of features, hidden units and
  classes rounded up to multiples of ``_tile.ROWS``, ``HIDDEN_TILE`` and
  ``CLASS_TILE``.  The extra ones have zero weights: an extra feature is 0 in
  every sample, an extra hidden unit has activation relu(0) = 0, an extra
  class has gradient 0 (the softmax runs over the K real ones), and L2 keeps
  0 at 0, so padding is exact and the kernels need no tail code.  Minibatches
  are padded the same way, with zero samples whose gradient is zero.

Each minibatch is first copied into a contiguous block ``Xb`` (np, Dp), so
every product reads rows at a fixed stride.  All five products of a step are
tiles of :mod:`fastsoftmax._tile`: the forward ``Hd = relu(Xb W1 + b1)`` and
``Z = Hd W2 + b2``, the backward ``dA = (G W2^T) * [Hd > 0]``, and the updates
``W1 = (1 - lr alpha) W1 - lr Xb^T dA`` and ``W2 = (1 - lr alpha) W2 - lr Hd^T G``,
applied in place without storing the weight gradients (plain SGD).  Momentum
and Adam store the gradient instead (the same tiles, overwriting a buffer)
and update weights and state in an elementwise pass
(:func:`_optimizer_rule`); their state is packed like the model.

Models trained together (:func:`_train_epoch_many`, a pack) keep this form
between epochs; during an epoch their W1 sit side by side in one wide
matrix, so the two big products run once for the whole pack; they are evaluated
together the same way (:func:`_forward_blocks`, which also serves one model alone).

The private ``_`` kernels take only arrays and scalars of the model's dtype
and allocate only once per call (never per minibatch).  The public wrappers
(``loss_and_grads``, ``sgd_step``, ``train_epoch``, ``evaluate``,
``predict_proba``) mirror :mod:`fastsoftmax.reference` for testing.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba.core import types

from ._alloc import empty, zeros
from ._exp import exp_nonpositive
from ._jit import jit
from ._prefetch import CACHE_LINE, prefetch
from ._views import flat_view, grid_view
from ._tile import (MID_ROWS, NARROW, NORM_PARTIALS, QUAD_ROWS, ROWS, column, square_sums,
                    tile1, tile1_mid, tile1_quad, tile1_short, tile1_tall, tile2, tile2_quad,
                    tile2_short, wide1, wide1_mid, wide1_quad, wide1_short, wide1_tall, wide2,
                    wide2_mid, wide2_quad, wide2_short, wide2_tall)
from .checks import pixels_to_float
from .optimizers import ADAM, NESTEROV, SGD, Optimizer, OptimizerState, init_state
from .params import Params
from .simd import VECTOR_BYTES

SAMPLE_TILE = 2  # minibatches are padded to an even size: _tiles takes rows in pairs
INV_255 = 1.0 / 255.0  # float64
HIDDEN_TILE = 8  # Hp is a multiple: whole float32 (8) and float64 (4) vectors
CLASS_TILE = 16  # Kp is a multiple: one two-vector float32 tile of logits
# A unit stride as a typed int64, not the literal 1, for which numba would
# compile _tiles once more (compile time counts: every copy costs ~0.8 s cold).
# The same for every constant a kernel passes to another: numba types a literal
# argument apart (Literal[int](0), Literal[bool](False)) and compiles the callee
# again for it, where a typed global shares the specialisation callers already
# compiled (tests/test_kernels.py checks the cache holds one of each).
UNIT = np.int64(1)
ORIGIN = np.int64(0)
NO_PROBA = np.bool_(False)  # _forward_blocks' want_proba, as the sweep passes it
FEATURE_BLOCK = 128  # rows of W1 per forward block: 128 x 16 float32 = 8 KiB of L1
# Rows of W1 per block of its update (_w1_product).  In one pass, each 16-column strip
# read all of Xb again (401 KB at B = 128, near this core's 512 KB L2 together with the
# next minibatch's prefetched rows); a block's 192 features of Xb (96 KB at B = 128)
# stay in L2 across its strips.  Packs of four, in-process alternation, one core:
# 4-8% less per epoch at H = 40 B = 128 and H = 20 B = 128, 0-5% at B = 32 and 64;
# blocks of 48, 96, 128 and 392 rows measured within noise of 192.  Same bits.
W1_ROW_BLOCK = 192


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


# --------------------------------------------------------------------------
# compiled building blocks
#
# A block that only the training kernels call (the backward pass, the cross-entropy,
# the norms, the W2 and bias updates, the optimiser rules, the prefetch) is inlined into
# them (inline="always").  Numba compiles a called function as a library of its own,
# optimises it and emits its machine code, then links it into each caller and optimises
# and emits it there again; inlined, it is compiled once, in the kernel.  The epoch
# kernel's first compile took 16.1-17.0 s against 16.6-19.6 s before, and the default
# sweep's first run 43.8-47.6 s against 46.1-49.2 s (three alternating runs each, one
# core, empty cache), with the same epoch speed and the same bits.  Blocks that the
# evaluation kernel shares (the gather, the scratch, the packed views) stay called by
# name: inlining them too made the two first compiles slower.  _tiles, the largest,
# is not linked at all: every kernel takes it as a function pointer (tiles_pointer),
# so its code is optimised and emitted once, not again in each kernel.  First runs of
# the default sweep: the epoch kernel 6.2-6.9 s against 7.2-7.7 s, the validation
# kernel 1.9-2.1 s against 2.2-2.8 s (numba's compile events, two runs each).
# Arrays are viewed flat or as rows x cols with _views (flat_view, grid_view), not
# ravel/reshape, whose generic checks numba lowers again at every call site: the epoch
# kernel's first compile 15.1-16.4 s against 16.7-17.9 s (three alternating runs).
# New arrays come from _alloc's intrinsics, not np.empty/np.zeros/np.ones/np.full, which
# numba compiles as functions of their own for every (shape, dtype) and caller's flags.


def _strip(tall, mid, tile, quad, short):
    """A column strip's row loop over the tiles of one width, as a kernel: ``tall``
    takes 2 ROWS rows at a time where they fit; the rest (an even number below
    2 ROWS) goes to ``mid`` (8 rows), ``tile`` (ROWS), ``quad`` (4) and ``short`` (2)
    tiles, each used at most once, except ``short`` for 10 = 8 + 2.

    strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss, beta, gamma) covers the
    tiles' columns from j for r < n_rows (even).  The few-row tiles keep fewer
    accumulators than the FMA units can overlap, so a minibatch of 32 runs
    12 + 12 + 8 rows rather than 12 + 12 + 6 + 2.  Numba takes no function
    arguments, so each width's strip is built from its own tiles here; inlined
    into _tiles, never compiled (or cached) alone.
    """
    @jit(inline="always", cache=False)
    def strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss, beta, gamma):
        r = 0
        while r + 2 * ROWS <= n_rows:
            tall(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += 2 * ROWS
        if r + MID_ROWS <= n_rows:
            mid(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += MID_ROWS
        if r + ROWS <= n_rows:
            tile(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += ROWS
        if r + QUAD_ROWS <= n_rows:
            quad(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += QUAD_ROWS
        while r < n_rows:
            short(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += 2

    return strip


# One 32-byte vector wide, the last strip of a row in both designs: with 6 rows this
# tile is bound by its 7 loads per 6 FMAs, so it takes 12 where they fit.
_narrow_strip = _strip(tile1_tall, tile1_mid, tile1, tile1_quad, tile1_short)
# The AVX-512 design's 64-byte strips, two vectors and one.
_wide2_strip = _strip(wide2_tall, wide2_mid, wide2, wide2_quad, wide2_short)
_wide1_strip = _strip(wide1_tall, wide1_mid, wide1, wide1_quad, wide1_short)


if VECTOR_BYTES == 32:
    @jit
    def _tiles(a, a_ss, a_sk, n_rows, b, b_sk, k, out, o_ss, width, beta, gamma):
        """out[r, j] = beta out[r, j] + gamma sum_k a[r a_ss + k a_sk] b[k b_sk + j].

        a, b, out: 1-D views of C-ordered arrays (offsets and strides in elements);
        r < n_rows (even), j < width (a multiple of 32 bytes).  beta, gamma: scalars,
        or 1-D arrays of one value per output column (j < width).  The AVX2 design:
        two-vector tiles cover the width, a one-vector tile the rest; rows go ROWS
        at a time, then 4, then 2 (the one-vector strip: see _strip).  Columns are
        the outer loop so one block of b serves
        every row tile while it is in cache.
        """
        lanes = NARROW // a.itemsize
        # ROWS-row tiles, then 4-row ones (8 accumulators keep both FMA units
        # busy; a 2-row tile's 4 do not): 32 rows are 4 x 6 + 2 x 4, not 5 x 6 + 2.
        sixes = n_rows - n_rows % ROWS
        if n_rows % ROWS == 2 and sixes >= ROWS:
            sixes -= ROWS
        j = 0
        while j + 2 * lanes <= width:
            for r in range(0, sixes, ROWS):
                tile2(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                      column(beta, j), column(gamma, j))
            r = sixes
            while r + QUAD_ROWS <= n_rows:
                tile2_quad(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                           column(beta, j), column(gamma, j))
                r += QUAD_ROWS
            if r < n_rows:
                tile2_short(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                            column(beta, j), column(gamma, j))
            j += 2 * lanes
        if j < width:
            _narrow_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                          column(beta, j), column(gamma, j))
else:
    @jit
    def _tiles(a, a_ss, a_sk, n_rows, b, b_sk, k, out, o_ss, width, beta, gamma):
        """As the AVX2 ``_tiles``, in the AVX-512 design: 64-byte vectors for the bulk.

        Two-vector tiles (32 float32 columns) take 12 rows at a time, which
        AVX-512's 32 registers hold; then one 64-byte vector; then, for widths
        that are an odd multiple of 32 bytes (hidden sizes pad only to 8
        float32), the 32-byte strip of the AVX2 design.
        """
        lanes = VECTOR_BYTES // a.itemsize
        j = 0
        while j + 2 * lanes <= width:
            _wide2_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                         column(beta, j), column(gamma, j))
            j += 2 * lanes
        if j + lanes <= width:
            _wide1_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                         column(beta, j), column(gamma, j))
            j += lanes
        if j < width:
            _narrow_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                          column(beta, j), column(gamma, j))


def tiles_types(dtype) -> tuple:
    """The argument types of every kernel's _tiles calls for models of ``dtype``: 1-D
    C-ordered views of a, b and out, int64 offsets, strides and sizes, and one beta
    and gamma per column (_overwrite_coefs).  The kernels take _tiles as a function
    pointer of this signature (:func:`tiles_pointer`), so it has no other."""
    vector = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    i64 = types.int64
    return (vector, i64, i64, i64, vector, i64, i64, vector, i64, i64, vector, vector)


@functools.lru_cache(maxsize=None)
def tiles_pointer(dtype) -> types.FunctionType:
    """The type under which every kernel takes _tiles for models of ``dtype``: a function
    pointer (its last argument, ``tiles``), not a callee called by name.

    Called by name, a jitted function's code is linked into each caller, and numba
    optimises and emits it again there: _tiles, the largest block, was compiled three
    times on a first run (alone, in the epoch kernel and in the evaluation kernel).  As a
    pointer it is compiled once, and every kernel calls that machine code.
    """
    return types.FunctionType(types.none(*tiles_types(np.dtype(dtype))))


def with_tiles(kernel, dtype, *args):
    """``kernel(*args, _tiles)``, _tiles passed as the pointer of tiles_pointer(dtype).

    Called through the dispatcher, numba would type the _tiles argument as the callee
    itself and compile the kernel again with it linked in; the entry point of the
    signature that takes the pointer (compiled or looked up here) converts it instead.
    """
    entry = kernel.compile(tuple(numba.typeof(a) for a in args) + (tiles_pointer(dtype),))
    return entry(*args, _tiles)


@jit
def _gather(X, table, rows, n, Xb):
    """Xb[i, :D] = X[rows[i]] for i < n; rows n .. pad_samples(n) of Xb zeroed.

    X: (N, D) of Xb's dtype with ``table`` None, or uint8 pixels with ``table``
    = pixel_table(Xb.dtype), whose values they are given (numba compiles the
    copy branch only when table is None).  Xb (>= pad_samples(n), Dp): columns
    D .. Dp stay zero.
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


def gather_types(X, table, dtype) -> tuple:
    """The argument types of the kernels' _gather calls for the data X and its ``table``
    (see :func:`table_for`) and models of ``dtype``: the rows and the block come from
    :func:`_scratch`.  The sweep compiles _gather for them ahead of the epoch kernel
    (sweep.run_plan)."""
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
    # while every sample tile uses them.  At H = 20-40 this measured the same as
    # one pass (W1 fits in L2); it is meant for layers whose W1 outgrows L2
    # (about H > 160 in float32), where it has not been measured.
    for f in range(0, Dp, FEATURE_BLOCK):
        beta = zeros_c if f == 0 else ones_c
        tiles(Xf[f:], Dp, UNIT, npad, Wf[f * Wd:], Wd, min(FEATURE_BLOCK, Dp - f), Af, Wd,
              width, beta, ones_c)


@jit(inline="always")
def _relu_bias(A, c, npad, b1, H, Hd):
    """Hd[i, j] = relu(A[i, c + j] + b1[j]) for j < H, 0 for H <= j < Hd's width; i < npad.

    Padded rows too: they meet zero gradients later.  A may be Hd itself (c = 0,
    H its width: in place, as one model's forward pass), or a pack's wide
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
    as float64: a model's squared W1 norm, out of the pack's wide W1's sums."""
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
            # cannot forward (2.7% of a pack's epoch at H = 40 B = 128, perf).
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
    wide W1 (:func:`_train_epoch_many`).
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
    so _tiles has one specialisation per dtype: the wide W1 update needs them per
    column, and a second, scalar specialisation cost 1.0-1.4 s of a first run.
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
    # time in the cross-entropy's loop, where each random read of y stalled it (1.8% of
    # a pack's epoch at H = 40 B = 128, perf).
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
    string formatting that cost ~10 s of a first run's compile.
    """
    for r in range(src.shape[0]):
        for j in range(H):
            dst[r, d + j] = src[r, s + j]


def _epoch_kernel(rules: bool):
    """The epoch kernel, with the optimiser rules other than plain SGD (``rules``) or
    without them.

    Without, the branches that step momentum, Nesterov and Adam are pruned before
    typing (``rules`` is a constant of the closure), and the kernel compiles in about
    2 s less: what the default grid, all SGD, pays on a first run.  Both kernels run
    the same operations on a plain-SGD model, and give the same bits
    (tests/test_kernels.py).  The one without raises if handed another rule.
    """

    @jit
    def epoch(X, table, y, order, batch_size, lrs, alphas, limits, state, offs, hidden,
              K, alive, losses, xents, opts, settings, slots, steps, tiles):
        """One epoch for P models that share the minibatch order, in place.

        Each minibatch is gathered once for all of them, and their first layers
        work side by side: for the epoch, the models' W1 are copied into the
        columns of one wide matrix (the plain-SGD models first, then the others,
        each H columns with no padding between models), so the forward product
        and the W1 update each run once over all their hidden units, in full
        vectors, instead of once per model on narrow ones.  The rest of a step
        (softmax, cross-entropy, the backward pass, W2) runs model by model.  An
        output column of a product is the same chain of operations wherever it
        sits, and every per-model part reads only that model's columns, so each
        model sees exactly the operations it would see alone (P = 1): the
        results are bit-identical to training it alone.

        X (N, D): float of the model dtype with ``table`` None, or uint8 pixels
        with ``table`` = pixel_table(dtype) (see :func:`_gather`); y (N,) int64;
        order (N,) int64 permutation, minibatches its consecutive slices (the
        last one smaller).  lrs, alphas (P,) of the model dtype; limits (P,)
        float64, the largest loss accepted (reference.divergence_limit).
        state 1-D: model m packed at offs[m] (see :func:`packed_views`) with
        hidden[m] hidden units (unpadded; packed padded to a multiple of
        HIDDEN_TILE) and K classes.
        opts (P,) int64: each model's rule (optimizers.SGD, MOMENTUM, NESTEROV,
        ADAM); settings (P, 4) float64 (Optimizer.settings); slots (2, len(state))
        of the model dtype, the optimiser state packed like ``state`` ((2, 0)
        when every model is plain SGD, which keeps none); steps (P,) int64, in
        and out, steps taken.
        alive (P,) bool, in and out: models marked False are skipped; a model whose
        loss diverges is marked False before that minibatch's update.
        losses (P,) float64 out: mean loss (cross-entropy + L2), each minibatch
        weighted by its size; NaN for models not alive at the end.
        xents (P,) float64 out: the same mean of the cross-entropy alone (no L2
        term), comparable with a validation cross-entropy.
        tiles: :func:`_tiles` for the model dtype, as a function pointer (see
        :func:`tiles_pointer`).
        """
        N = order.shape[0]
        B = min(batch_size, N)
        P = offs.shape[0]
        Dp = pad_features(X.shape[1])
        Kp = pad_classes(K)
        Bp = pad_samples(B)
        dt = state.dtype.type
        zero, one = dt(0), dt(1)
        # The wide layout: model m's W1 in columns cols[m] .. cols[m] + hidden[m];
        # -1 for models not (or no longer) in it.  The plain-SGD block is padded
        # to whole vectors: its update is fused into the product (per-column
        # decay and learning rate); the other rules' block gets the gradient.
        cols = empty(P, np.int64)
        c = ORIGIN
        for m in range(P):
            cols[m] = -1
            if alive[m] and opts[m] == SGD:
                cols[m] = c
                c += hidden[m]
        split = pad_hidden(c)
        c = split
        for m in range(P):
            if alive[m] and opts[m] != SGD:
                if not rules:
                    raise ValueError("_train_epoch_sgd trains plain-SGD models only")
                cols[m] = c
                c += hidden[m]
        Hw = pad_hidden(c)
        in_layout = 0
        for m in range(P):
            in_layout += cols[m] >= 0
        W1w = zeros((Dp, Hw), state.dtype)
        # A plain-SGD step's _tiles coefficients, beta = 1 - lr alpha and gamma = -lr:
        # per column of the SGD block for W1, in each of the Kp columns for W2.
        decay_w = empty(split, state.dtype)
        step_w = zeros(split, state.dtype)
        for j in range(split):
            decay_w[j] = one
        w2_coefs = empty((P, 2, Kp), state.dtype)
        widest = 0
        for m in range(P):
            if hidden[m] > hidden[widest]:
                widest = m
            decay, step = one - lrs[m] * alphas[m], -lrs[m]
            for k in range(Kp):
                w2_coefs[m, 0, k] = decay
                w2_coefs[m, 1, k] = step
            if cols[m] < 0:
                continue
            H, Hp, cm = hidden[m], pad_hidden(hidden[m]), cols[m]
            W1 = packed_views(state, offs[m], Hp, Dp, K)[0]
            _copy_columns(W1, ORIGIN, W1w, cm, H)
            if opts[m] == SGD:
                for j in range(cm, cm + H):
                    decay_w[j] = decay
                    step_w[j] = step
        # Scratch: the wide products' (A = Xb W1 before bias, dA), and one model's
        # at a time, sized for the widest; each model's 2-D views of it have that
        # model's own row stride.
        Hmax = pad_hidden(hidden[widest])
        W1x, _, W2x, _ = packed_views(state, offs[widest], Hmax, Dp, K)
        rows, Xb, Hd, Z, G, dA, W2T = _scratch(B, W1x, W2x)
        labels = empty(B, np.int64)
        zeros_c, ones_c = _overwrite_coefs(state, max(Hw, Hmax, Kp))
        A = empty((Bp, Hw), state.dtype)
        dAw = zeros((Bp, Hw), state.dtype)
        gW1w = empty((Dp, Hw - split), state.dtype)  # the other rules' W1 gradient
        hd, da, w2t = flat_view(Hd), flat_view(dA), flat_view(W2T)
        # Each model's b1, W2, b2 gradient (packed as they are), kept until its W1
        # gradient is ready: one call of _optimizer_rule then steps every part.
        grad = empty((P, Hmax + Hmax * Kp + K), state.dtype)
        # Column sums of squares of W1w, for the L2 terms: one pass over it per step
        # (after the forward product, before any update), for every model at once.
        norms = False
        for m in range(P):
            norms |= alphas[m] != 0
        sq = empty(Hw, state.dtype)
        sq_parts = empty(NORM_PARTIALS * Hw, state.dtype)
        total = zeros(P, np.float64)
        total_xent = zeros(P, np.float64)
        for start in range(0, N, B):
            if in_layout == 0:
                break  # every model has diverged
            n = _load_minibatch(X, table, y, order, start, B, rows, labels, Xb)
            npad = pad_samples(n)
            _input_product(Xb, npad, W1w, Hw, A, zeros_c, ones_c, tiles)
            if norms:
                square_sums(flat_view(W1w), Dp, Hw, sq_parts, sq)
            for m in range(P):
                if cols[m] < 0:
                    continue
                H, Hp, cm, off = hidden[m], pad_hidden(hidden[m]), cols[m], offs[m]
                W1, b1, W2, b2 = packed_views(state, off, Hp, Dp, K)
                Hm = grid_view(hd, Bp, Hp)
                dAm = grid_view(da, Bp, Hp)
                _relu_bias(A, cm, npad, b1, H, Hm)
                _logits(Hm, npad, n, W2, b2, Z, zeros_c, ones_c, tiles)
                lr, alpha = lrs[m], alphas[m]
                xent = _xent_grad(Z, K, labels, n, G) / n
                value = xent
                if alpha != 0:
                    value += 0.5 * alpha * (_columns_norm(sq, cm, H) + _squared_norm(W2))
                if not value <= limits[m]:  # NaN compares False
                    # Diverged: it keeps its weights from before this minibatch,
                    # and leaves the wide layout (its columns stop changing).
                    alive[m] = False
                    cols[m] = -1
                    in_layout -= 1
                    _copy_columns(W1w, cm, W1, ORIGIN, H)
                    for i in range(Bp):
                        for j in range(cm, cm + H):
                            dAw[i, j] = zero
                    if opts[m] == SGD:
                        for j in range(cm, cm + H):
                            decay_w[j] = one
                            step_w[j] = zero
                    continue
                gb1, gb2 = grad[m, :Hp], grad[m, Hp + Hp * Kp:Hp + Hp * Kp + K]
                _backward(n, Hm, G, W2, grid_view(w2t, Kp, Hp), dAm, gb1, gb2, zeros_c, ones_c,
                          tiles)
                for i in range(npad):
                    for j in range(H):
                        dAw[i, cm + j] = dAm[i, j]
                steps[m] += 1
                if not rules or opts[m] == SGD:
                    # after _backward used the old W2
                    _w2_update(Hm, n, G, W2, w2_coefs[m, 0], w2_coefs[m, 1], tiles)
                    _bias_update(lr, b1, b2, gb1, gb2)
                else:
                    _w2_update(Hm, n, G, grid_view(grad[m, Hp:Hp + Hp * Kp], Hp, Kp), zeros_c,
                               ones_c, tiles)
                total[m] += value * n
                total_xent[m] += xent * n
            # W1 of the SGD block: W1 = (1 - lr alpha) W1 - lr Xb^T dA, per column;
            # of the others: their gradient Xb^T dA, then each one's rule.
            Xf = flat_view(Xb)
            if split > 0:
                _w1_product(Xf, Dp, npad, flat_view(dAw), Hw, flat_view(W1w), Hw, split, decay_w,
                            step_w, tiles)
            if rules and Hw > split:
                _w1_product(Xf, Dp, npad, flat_view(dAw)[split:], Hw, flat_view(gW1w), Hw - split,
                            Hw - split, zeros_c, ones_c, tiles)
                for m in range(P):
                    if cols[m] < 0 or opts[m] == SGD:
                        continue
                    H, Hp, cm = hidden[m], pad_hidden(hidden[m]), cols[m]
                    coefs = _optimizer_coefs(state, lrs[m], settings[m], steps[m])
                    # Every row of its W1 (in the wide layout), then b1, W2 and b2 (which
                    # follow W1 in the packed model, as in grad): one call site, so the
                    # rules are compiled once (each site cost ~1 s of a first run).
                    rest = offs[m] + Dp * Hp
                    for seg in range(Dp + 3):
                        if seg < Dp:
                            w = W1w[seg, cm:cm + H]
                            g = gW1w[seg, cm - split:cm - split + H]
                            at, l2 = offs[m] + seg * Hp, alphas[m]
                        else:
                            lo, size, l2 = ORIGIN, Hp, zero
                            if seg == Dp + 1:
                                lo, size, l2 = Hp, Hp * Kp, alphas[m]
                            elif seg == Dp + 2:
                                lo, size = Hp + Hp * Kp, K
                            w = state[rest + lo:rest + lo + size]
                            g = grad[m, lo:lo + size]
                            at = rest + lo
                        _optimizer_rule(opts[m], w, g, slots[0, at:at + w.shape[0]],
                                        slots[1, at:at + w.shape[0]], lrs[m], l2, coefs)
        for m in range(P):
            if cols[m] >= 0:
                W1 = packed_views(state, offs[m], pad_hidden(hidden[m]), Dp, K)[0]
                _copy_columns(W1w, cols[m], W1, ORIGIN, hidden[m])
            losses[m] = total[m] / N if alive[m] else np.nan
            xents[m] = total_xent[m] / N if alive[m] else np.nan

    return epoch


_train_epoch_many = _epoch_kernel(rules=True)
_train_epoch_sgd = _epoch_kernel(rules=False)


def epoch_kernel(opts: np.ndarray):
    """The epoch kernel for models with the rules ``opts`` (optimizers codes): the one
    without the other rules when every model is plain SGD."""
    return _train_epoch_sgd if bool(np.all(np.asarray(opts) == SGD)) else _train_epoch_many


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


EVAL_BLOCK = np.int64(42 * ROWS)  # samples per forward block when evaluating


@jit
def _forward_blocks(X, table, state, offs, hidden, K, alive, y, ce, correct, proba, want_proba,
                    tiles):
    """Forward pass of M models over all of X (N, D), in blocks of EVAL_BLOCK samples.

    X and table as for :func:`_gather`.  state 1-D: model m packed at offs[m]
    (see :func:`packed_views`) with hidden[m] hidden units (unpadded) and K
    classes; alive (M,) bool: models marked False are skipped, their outputs
    left as they are.  Each block is gathered once for all models, and the
    first layer's product runs once over their W1 side by side (as in
    :func:`_train_epoch_many`); the rest runs model by model.  Each model sees
    the operations it would see alone: its results are bit-identical alone or
    among others.
    With y given (len N): ce (M,) float64 out, the summed cross-entropy, and
    correct (M,) int64 out, the number of argmax predictions equal to y (y of
    length 0 leaves both as they are).  With ``want_proba``: proba (M, N, K)
    out, the softmax probabilities.  tiles: :func:`_tiles` for the model dtype, as a
    function pointer (see :func:`tiles_pointer`).
    """
    N = X.shape[0]
    M = offs.shape[0]
    Dp = pad_features(X.shape[1])
    dt = state.dtype.type
    # The wide layout: model m's W1 in columns cols[m] .. cols[m] + hidden[m].
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
    if M == 1:  # one model: its own W1 is the wide matrix, no copy
        W1w = packed_views(state, offs[0], Hw, Dp, K)[0]
    else:
        W1w = zeros((Dp, Hw), state.dtype)
        for m in range(M):
            if cols[m] >= 0:
                W1 = packed_views(state, offs[m], pad_hidden(hidden[m]), Dp, K)[0]
                _copy_columns(W1, ORIGIN, W1w, cols[m], hidden[m])
    Hmax = pad_hidden(hidden[widest])
    W1x, _, W2x, _ = packed_views(state, offs[widest], Hmax, Dp, K)
    rows, Xb, Hd, Z, _, _, _ = _scratch(EVAL_BLOCK, W1x, W2x)
    Kp = Z.shape[1]  # the softmax's loop reads whole vectors of Z's padded classes
    zeros_c, ones_c = _overwrite_coefs(state, max(Hw, Kp))
    Bp = Xb.shape[0]
    A = empty((Bp, Hw), state.dtype)
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
            _, b1, W2, b2 = packed_views(state, offs[m], Hp, Dp, K)
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


# --------------------------------------------------------------------------
# conversion between Params and the kernel form


def to_kernel(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh kernel-form arrays W1 (Dp, Hp), b1 (Hp,), W2 (Hp, Kp), b2 (K,), zero-padded."""
    D, H, K = params.shape
    # The padding rules' Python functions: a call of a jitted function from Python
    # starts numba's CPU target and compiles it (1.1 s, before a first run's second
    # process could start compiling), and these are plain integer arithmetic.
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
    value = with_tiles(_loss_and_grads, params.dtype, X, table_for(X, params.dtype),
                       np.asarray(y, np.int64), _scalar(params, alpha), *k, *grads)
    return float(value), from_kernel(*grads, *params.shape[:2])


def sgd_step(params: Params, X: np.ndarray, y: np.ndarray, learning_rate: float,
             alpha: float, limit: float = np.inf, optimizer: Optimizer | None = None,
             state: OptimizerState | None = None) -> tuple[float, Params]:
    """Kernel version of :func:`fastsoftmax.reference.sgd_step`."""
    n = X.shape[0]
    params, loss, _ = train_epoch(params, X, y, np.arange(n), n, learning_rate, alpha, limit,
                                  optimizer, state)
    return loss, params


def train_epoch(params: Params, X: np.ndarray, y: np.ndarray, order: np.ndarray,
                batch_size: int, learning_rate: float, alpha: float,
                limit: float = np.inf, optimizer: Optimizer | None = None,
                state: OptimizerState | None = None) -> tuple[Params, float, bool]:
    """Kernel version of :func:`fastsoftmax.reference.train_epoch`."""
    out, losses, diverged = train_epoch_many(
        [params], X, y, order, batch_size, [learning_rate], [alpha], [limit],
        None if optimizer is None else [optimizer], None if state is None else [state])
    return out[0], losses[0], diverged[0]


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


class Packed:
    """Models packed for :func:`_train_epoch_many`, with their optimisers and state.

    Built once (a fit, a benchmark) and trained epoch after epoch in place;
    the Params and OptimizerState are read back only when asked for.

    params: P models of one dtype and one (D, K), any hidden sizes;
    optimizers: P Optimizer (default: plain SGD); states: P OptimizerState
    (default: fresh), copied in.
    """

    def __init__(self, params: list[Params], optimizers=None, states=None):
        P = len(params)
        self.shapes = [p.shape for p in params]
        self.dtype = params[0].dtype
        optimizers = [Optimizer()] * P if optimizers is None else [o or Optimizer()
                                                                   for o in optimizers]
        if states is None:
            states = [init_state(o, p) for o, p in zip(optimizers, params)]
        self.flat, self.offs, self.hidden = pack(params)
        self.slots = pack_slots(params, self.offs, states)
        self.n_slots = [len(st.slots) for st in states]
        self.steps = np.array([st.step for st in states], np.int64)
        self.opts, self.settings = settings_of(optimizers)

    def epoch(self, X, y, order, batch_size, learning_rates, alphas, limits=None):
        """One epoch of every model on X (N, D), y (N,), sharing ``order`` (N,).

        learning_rates, alphas, limits (default: none): P values each.
        Returns (losses (P,) float64, alive (P,) bool): a model not alive has
        diverged and stopped before that minibatch's update (its loss NaN).
        """
        P = self.offs.shape[0]
        alive = np.ones(P, np.bool_)
        losses = np.empty(P)
        limits = np.full(P, np.inf) if limits is None else np.asarray(limits, np.float64)
        with_tiles(
            epoch_kernel(self.opts), self.dtype,
            X, table_for(X, self.dtype), np.asarray(y, np.int64), np.asarray(order, np.int64),
            batch_size, np.asarray(learning_rates, self.dtype), np.asarray(alphas, self.dtype),
            limits, self.flat, self.offs, self.hidden, self.shapes[0][2], alive, losses,
            np.empty(P), self.opts, self.settings, self.slots, self.steps)
        return losses, alive

    def params(self, m: int) -> Params:
        """Model m's weights now (fresh arrays)."""
        return unpack(self.flat, self.offs[m], self.shapes[m])

    def state(self, m: int) -> OptimizerState:
        """Model m's optimiser state now (fresh arrays)."""
        return OptimizerState([unpack(self.slots[j], self.offs[m], self.shapes[m])
                               for j in range(self.n_slots[m])],
                              int(self.steps[m]))


def train_epoch_many(params: list[Params], X: np.ndarray, y: np.ndarray, order: np.ndarray,
                     batch_size: int, learning_rates, alphas, limits=None, optimizers=None,
                     states=None) -> tuple[list[Params], list[float], list[bool]]:
    """:func:`train_epoch` for several models at once, sharing ``order``.

    params: P models of one dtype and one (D, K), any hidden sizes; learning_rates,
    alphas, limits (default: none), optimizers (default: plain SGD): P values
    each; states: P OptimizerState (default: fresh), advanced in place.
    Returns the P trained models (fresh arrays), their losses and whether each
    diverged, exactly as P calls of :func:`train_epoch`.
    """
    packed = Packed(params, optimizers, states)
    losses, alive = packed.epoch(X, y, order, batch_size, learning_rates, alphas, limits)
    for m, st in enumerate(states or []):
        now = packed.state(m)
        st.slots, st.step = now.slots, now.step
    return ([packed.params(m) for m in range(len(params))], [float(v) for v in losses],
            [not a for a in alive])


_NO_LABELS = np.empty(0, np.int64)
_ONE_ALIVE = np.ones(1, np.bool_)  # one model, evaluated
WANT_PROBA = np.bool_(True)


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Kernel version of :func:`fastsoftmax.reference.evaluate`."""
    state, offs, hidden = pack([params])
    ce, correct = np.zeros(1), np.zeros(1, np.int64)
    with_tiles(_forward_blocks, params.dtype, X, table_for(X, params.dtype), state, offs,
               hidden, params.shape[2], _ONE_ALIVE, np.asarray(y, np.int64), ce, correct,
               np.empty((0, 0, 0), params.dtype), NO_PROBA)
    value = ce[0] / X.shape[0]
    if alpha:
        W1, _, W2, _ = packed_views(state, offs[0], pad_hidden(hidden[0]),
                                    pad_features(params.shape[0]), params.shape[2])
        value += 0.5 * alpha * (_squared_norm(W1) + _squared_norm(W2))
    return float(value), int(correct[0]) / X.shape[0]


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    """Kernel version of :func:`fastsoftmax.reference.predict_proba`: (n, K)."""
    state, offs, hidden = pack([params])
    proba = np.empty((1, X.shape[0], params.shape[2]), params.dtype)
    with_tiles(_forward_blocks, params.dtype, X, table_for(X, params.dtype), state, offs,
               hidden, params.shape[2], _ONE_ALIVE, _NO_LABELS, np.zeros(1),
               np.zeros(1, np.int64), proba, WANT_PROBA)
    return proba[0]
