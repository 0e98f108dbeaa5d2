"""The epoch kernel: one epoch of a pack of models sharing each minibatch, in place,
and :class:`Packed`, the models it trains between epochs.

Models trained together keep the kernel form (:mod:`.layout`) between epochs.
Each minibatch is gathered once for all of them, and their first layers work
side by side: for the epoch, the models' W1 are copied into the columns of one
matrix, the pack layout (the plain-SGD models first, then the others, each
H columns with no padding between models), so the forward product and the W1
update each run once over all their hidden units, in full vectors, instead of
once per model on narrow ones.  The rest of a step (softmax, cross-entropy, the
backward pass, W2) runs model by model.  An output column of a product is the
same chain of operations wherever it sits, and every per-model part reads only
that model's columns, so each model sees exactly the operations it would see
alone (P = 1): the results are bit-identical to training it alone.

The epoch kernel's arguments, for P models (``epoch(X, table, y, order,
batch_size, lrs, alphas, limits, weights, offs, hidden, K, alive, losses, xents,
opts, settings, slots, steps, tiles)``):

- X, table: the N data rows and their table (layout.data_rows: uint8 pixels, or the
  bytes of floats of the model dtype); y (N,) int64; order (N,) int64 permutation,
  minibatches its consecutive slices (the last one smaller);
- lrs, alphas (P,) of the model dtype; limits (P,) float64, the largest loss
  accepted (reference.divergence_limit);
- weights 1-D: model m packed at offs[m] (see layout.packed_views) with hidden[m]
  hidden units (unpadded; packed padded to a multiple of HIDDEN_TILE) and K classes;
- opts (P,) int64: each model's rule (optimizers.SGD, MOMENTUM, NESTEROV, ADAM);
  settings (P, 4) float64 (Optimizer.settings); slots (2, len(weights)) of the model
  dtype, the optimiser weights packed like ``weights`` ((2, 0) when every model is
  plain SGD, which keeps none); steps (P,) int64, in and out, steps taken;
- alive (P,) bool, in and out: models marked False are skipped; a model whose
  loss diverges is marked False before that minibatch's update;
- losses (P,) float64 out: mean loss (cross-entropy + L2), each minibatch
  weighted by its size; NaN for models not alive at the end; xents (P,) float64
  out: the same mean of the cross-entropy alone (no L2 term), comparable with a
  validation cross-entropy;
- tiles: products._tiles for the model dtype, as a function pointer (see
  products.tiles_pointer).
"""

from __future__ import annotations

import numba
import numpy as np
from numba.core import types

from ..optimizers import SGD, Optimizer, OptimizerState, init_state
from ..params import Params
from ._alloc import empty, zeros
from ._tile import NORM_PARTIALS, square_sums
from ._views import flat_view, grid_view
from .jit import jit
from .layout import (ORIGIN, _copy_columns, data_rows, pack, pack_slots, pad_classes,
                     pad_features,
                     n_features, pad_hidden, pad_samples, packed_views, settings_of, unpack)
from .products import tiles_pointer, with_tiles
from .steps import (_backward, _bias_update, _columns_norm, _input_product,
                    _load_minibatch, _logits, _optimizer_coefs, _optimizer_rule,
                    _overwrite_coefs, _relu_bias, _scratch, _squared_norm, _w1_product,
                    _w2_update, _xent_grad)


@jit(inline="always")
def _lay_out(weights, offs, hidden, K, Dp, Kp, alive, opts, lrs, alphas):
    """The pack layout and each plain-SGD step's _tiles coefficients.

    Model m's W1 lies in columns cols[m] .. cols[m] + hidden[m] of the pack-layout W1w
    (Dp, Hw), -1 for a model not in it (not alive).  The plain-SGD block, columns up
    to split, is padded to whole vectors: its update is fused into the product, with
    per-column coefficients beta = 1 - lr alpha and gamma = -lr (decay_w, step_w
    (split,); w2_coefs (P, 2, Kp) for W2); the other rules' block, split to Hw, gets
    the gradient.  Returns (cols, split, Hw, W1w, decay_w, step_w, w2_coefs, widest),
    widest a model with the most hidden units."""
    one = weights.dtype.type(1)
    P = offs.shape[0]
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
            cols[m] = c
            c += hidden[m]
    Hw = pad_hidden(c)
    W1w = zeros((Dp, Hw), weights.dtype)
    decay_w = empty(split, weights.dtype)
    step_w = zeros(split, weights.dtype)
    for j in range(split):
        decay_w[j] = one
    w2_coefs = empty((P, 2, Kp), weights.dtype)
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
        W1 = packed_views(weights, offs[m], Hp, Dp, K)[0]
        _copy_columns(W1, ORIGIN, W1w, cm, H)
        if opts[m] == SGD:
            for j in range(cm, cm + H):
                decay_w[j] = decay
                step_w[j] = step
    return cols, split, Hw, W1w, decay_w, step_w, w2_coefs, widest


@jit(inline="always")
def _pack_scratch(weights, offs, hidden, widest, B, Dp, K, Hw, split):
    """An epoch's scratch for minibatches of up to B samples: what _scratch gives one
    model (sized for the widest; each model's 2-D views of it have its own row stride),
    the labels, the overwrite coefficients, the pack's products' A (Xb W1 before the
    bias) and dA, the other rules' W1 gradient, each model's b1, W2, b2 gradient
    (packed as they are, kept until its W1 gradient is ready, so that one call of
    _optimizer_rule steps every part), and the column sums of squares of W1w."""
    Bp, Kp = pad_samples(B), pad_classes(K)
    Hmax = pad_hidden(hidden[widest])
    W1x, _, W2x, _ = packed_views(weights, offs[widest], Hmax, Dp, K)
    rows, Xb, Hd, Z, G, dA, W2T = _scratch(B, W1x, W2x)
    zeros_c, ones_c = _overwrite_coefs(weights, max(Hw, Hmax, Kp))
    return (rows, Xb, Hd, Z, G, dA, W2T, empty(B, np.int64), zeros_c, ones_c,
            empty((Bp, Hw), weights.dtype), zeros((Bp, Hw), weights.dtype),
            empty((Dp, Hw - split), weights.dtype),
            empty((offs.shape[0], Hmax + Hmax * Kp + K), weights.dtype),
            empty(Hw, weights.dtype), empty(NORM_PARTIALS * Hw, weights.dtype))


@jit(inline="always")
def _model_loss(A, cm, npad, n, H, b1, W2, b2, Hm, Z, G, K, labels, alpha, sq, zeros_c,
                ones_c, tiles):
    """One model's forward pass from the pack's product A, its softmax cross-entropy and
    gradient G: (mean cross-entropy, that plus the L2 term)."""
    _relu_bias(A, cm, npad, b1, H, Hm)
    _logits(Hm, npad, n, W2, b2, Z, zeros_c, ones_c, tiles)
    xent = _xent_grad(Z, K, labels, n, G) / n
    value = xent
    if alpha != 0:
        value += 0.5 * alpha * (_columns_norm(sq, cm, H) + _squared_norm(W2))
    return xent, value


@jit(inline="always")
def _leave_layout(W1w, cm, W1, H, dAw, decay_w, step_w, sgd):
    """A diverged model keeps its weights from before this minibatch and leaves the pack
    layout: its W1 copied back, its columns of dA and (plain SGD) of the update's
    coefficients set so that they stop changing."""
    zero, one = W1w.dtype.type(0), W1w.dtype.type(1)
    _copy_columns(W1w, cm, W1, ORIGIN, H)
    for i in range(dAw.shape[0]):
        for j in range(cm, cm + H):
            dAw[i, j] = zero
    if sgd:
        for j in range(cm, cm + H):
            decay_w[j] = one
            step_w[j] = zero


@jit(inline="always")
def _model_backward(n, npad, Hm, G, W2, W2T, dAm, dAw, cm, H, gb1, gb2, zeros_c, ones_c,
                    tiles):
    """One model's backward pass, its dA copied into its columns of the pack's dAw."""
    _backward(n, Hm, G, W2, W2T, dAm, gb1, gb2, zeros_c, ones_c, tiles)
    for i in range(npad):
        for j in range(H):
            dAw[i, cm + j] = dAm[i, j]


@jit(inline="always")
def _other_rules_step(Xf, Dp, npad, dAw, Hw, split, gW1w, W1w, weights, offs, hidden, cols,
                      opts, lrs, alphas, settings, steps, slots, grad, K, zeros_c, ones_c,
                      tiles):
    """The W1 gradient of the other rules' block, Xb^T dA, then each of its models'
    rule over its W1 (in the pack layout), b1, W2 and b2."""
    _w1_product(Xf, Dp, npad, flat_view(dAw)[split:], Hw, flat_view(gW1w), Hw - split,
                Hw - split, zeros_c, ones_c, tiles)
    zero, Kp = weights.dtype.type(0), pad_classes(K)
    for m in range(offs.shape[0]):
        if cols[m] < 0 or opts[m] == SGD:
            continue
        H, Hp, cm = hidden[m], pad_hidden(hidden[m]), cols[m]
        coefs = _optimizer_coefs(weights, lrs[m], settings[m], steps[m])
        # Every row of its W1, then b1, W2 and b2 (which follow W1 in the packed
        # model, as in grad): one call site, so the rules are compiled once.
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
                w = weights[rest + lo:rest + lo + size]
                g = grad[m, lo:lo + size]
                at = rest + lo
            _optimizer_rule(opts[m], w, g, slots[0, at:at + w.shape[0]],
                            slots[1, at:at + w.shape[0]], lrs[m], l2, coefs)


def _epoch_kernel(rules: bool):
    """The epoch kernel (the module docstring), with the optimiser rules other than plain
    SGD (``rules``) or without them: then the branches that step momentum, Nesterov and
    Adam are pruned before typing (``rules`` is a constant of the closure), and the kernel
    compiles in less time, which an all-SGD grid's first run pays.  Both run the same
    operations on a plain-SGD model and give the same bits (tests/test_kernels.py); the
    one without raises if handed another rule."""

    @jit
    def epoch(X, table, y, order, batch_size, lrs, alphas, limits, weights, offs, hidden,
              K, alive, losses, xents, opts, settings, slots, steps, tiles):
        N, P = order.shape[0], offs.shape[0]
        B = min(batch_size, N)
        Dp, Kp, Bp = pad_features(n_features(X, table, weights)), pad_classes(K), pad_samples(B)
        cols, split, Hw, W1w, decay_w, step_w, w2_coefs, widest = _lay_out(
            weights, offs, hidden, K, Dp, Kp, alive, opts, lrs, alphas)
        if not rules and Hw > split:
            raise ValueError("_train_epoch_sgd trains plain-SGD models only")
        (rows, Xb, Hd, Z, G, dA, W2T, labels, zeros_c, ones_c, A, dAw, gW1w, grad, sq,
         sq_parts) = _pack_scratch(weights, offs, hidden, widest, B, Dp, K, Hw, split)
        hd, da, w2t = flat_view(Hd), flat_view(dA), flat_view(W2T)
        in_layout, norms = 0, False
        for m in range(P):
            in_layout += cols[m] >= 0
            norms |= alphas[m] != 0  # then one pass over W1w per step sums its columns
        total, total_xent = zeros(P, np.float64), zeros(P, np.float64)
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
                H, Hp, cm = hidden[m], pad_hidden(hidden[m]), cols[m]
                W1, b1, W2, b2 = packed_views(weights, offs[m], Hp, Dp, K)
                Hm, dAm = grid_view(hd, Bp, Hp), grid_view(da, Bp, Hp)
                xent, value = _model_loss(A, cm, npad, n, H, b1, W2, b2, Hm, Z, G, K, labels,
                                          alphas[m], sq, zeros_c, ones_c, tiles)
                if not value <= limits[m]:  # diverged (NaN compares False)
                    alive[m], cols[m] = False, -1
                    in_layout -= 1
                    _leave_layout(W1w, cm, W1, H, dAw, decay_w, step_w, opts[m] == SGD)
                    continue
                gb1, gb2 = grad[m, :Hp], grad[m, Hp + Hp * Kp:Hp + Hp * Kp + K]
                _model_backward(n, npad, Hm, G, W2, grid_view(w2t, Kp, Hp), dAm, dAw, cm, H,
                                gb1, gb2, zeros_c, ones_c, tiles)
                steps[m] += 1
                if not rules or opts[m] == SGD:  # after _backward used the old W2
                    _w2_update(Hm, n, G, W2, w2_coefs[m, 0], w2_coefs[m, 1], tiles)
                    _bias_update(lrs[m], b1, b2, gb1, gb2)
                else:
                    _w2_update(Hm, n, G, grid_view(grad[m, Hp:Hp + Hp * Kp], Hp, Kp),
                               zeros_c, ones_c, tiles)
                total[m] += value * n
                total_xent[m] += xent * n
            # W1 of the SGD block: W1 = (1 - lr alpha) W1 - lr Xb^T dA, per column;
            # of the others: their gradient Xb^T dA, then each one's rule.
            if split > 0:
                _w1_product(flat_view(Xb), Dp, npad, flat_view(dAw), Hw, flat_view(W1w), Hw,
                            split, decay_w, step_w, tiles)
            if rules and Hw > split:
                _other_rules_step(flat_view(Xb), Dp, npad, dAw, Hw, split, gW1w, W1w, weights,
                                  offs, hidden, cols, opts, lrs, alphas, settings, steps,
                                  slots, grad, K, zeros_c, ones_c, tiles)
        for m in range(P):  # each model still in the layout gets its W1 back
            if cols[m] >= 0:
                W1 = packed_views(weights, offs[m], pad_hidden(hidden[m]), Dp, K)[0]
                _copy_columns(W1w, cols[m], W1, ORIGIN, hidden[m])
            losses[m] = total[m] / N if alive[m] else np.nan
            xents[m] = total_xent[m] / N if alive[m] else np.nan

    return epoch


_train_epoch_many = _epoch_kernel(rules=True)
_train_epoch_sgd = _epoch_kernel(rules=False)


def epoch_types(X, table, y, order, dtype) -> tuple:
    """The epoch kernel's argument types for data rows X and their ``table``
    (layout.data_rows), labels y, an ``order``, and models of ``dtype``: the per-model
    arrays C-contiguous, as every caller passes them, so that the sweep (which names them
    to take the kernel as a pointer), fs.train and the estimator share one compiled
    kernel."""
    dt = numba.from_dtype(np.dtype(dtype))
    vec, grid = (lambda t: types.Array(t, 1, "C")), (lambda t: types.Array(t, 2, "C"))
    i64, f64 = types.int64, types.float64
    typeof = numba.typeof
    return (typeof(X), typeof(table), typeof(y), typeof(order), i64, vec(dt), vec(dt),
            vec(f64), vec(dt), vec(i64), vec(i64), i64, vec(types.bool_), vec(f64), vec(f64),
            vec(i64), grid(f64), grid(dt), vec(i64), tiles_pointer(dtype))


def epoch_kernel(opts: np.ndarray):
    """The epoch kernel for models with the rules ``opts`` (optimizers codes): the one
    without the other rules when every model is plain SGD."""
    return _train_epoch_sgd if bool(np.all(np.asarray(opts) == SGD)) else _train_epoch_many


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


class Packed:
    """Models packed for :func:`_train_epoch_many`, with their optimisers and their state.

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

    def epoch(self, X, y, order, batch_size, learning_rates, alphas, limits=None,
              alive=None):
        """One epoch of the models on X (N, D), y (N,), sharing ``order``: indices into X,
        the minibatches its consecutive slices (the last one smaller).

        learning_rates, alphas, limits (default: none): P values each; alive (P,) bool
        (default: all): the models to train, the others left as they are.
        Returns (losses (P,) float64, alive (P,) bool): a model not alive has
        diverged and stopped before that minibatch's update, or was not trained
        (its loss NaN).
        """
        P = self.offs.shape[0]
        alive = np.ones(P, np.bool_) if alive is None else np.array(alive, np.bool_)
        losses = np.empty(P)
        limits = np.full(P, np.inf) if limits is None else np.asarray(limits, np.float64)
        with_tiles(
            epoch_kernel(self.opts), self.dtype,
            *data_rows(X, self.dtype), np.asarray(y, np.int64), np.asarray(order, np.int64),
            batch_size, np.asarray(learning_rates, self.dtype), np.asarray(alphas, self.dtype),
            limits, self.flat, self.offs, self.hidden, self.shapes[0][2], alive, losses,
            np.empty(P), self.opts, self.settings, self.slots, self.steps)
        return losses, alive

    def params(self, m: int) -> Params:
        """Model m's weights now (fresh arrays)."""
        return unpack(self.flat, self.offs[m], self.shapes[m])

    def optimizer_state(self, m: int) -> OptimizerState:
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
        now = packed.optimizer_state(m)
        st.slots, st.step = now.slots, now.step
    return ([packed.params(m) for m in range(len(params))], [float(v) for v in losses],
            [not a for a in alive])
