"""The epoch kernel: one epoch of a pack of models sharing each minibatch, in place,
and :class:`Packed`, the models it trains between epochs.

Models trained together keep the kernel form (:mod:`.layout`) between epochs;
during an epoch their W1 sit side by side in one wide matrix, so the two big
products run once for the whole pack.
"""

from __future__ import annotations

import numpy as np

from ..optimizers import SGD, Optimizer, OptimizerState, init_state
from ..params import Params
from ._alloc import empty, zeros
from ._tile import NORM_PARTIALS, square_sums
from ._views import flat_view, grid_view
from .jit import jit
from .layout import (ORIGIN, _copy_columns, pack, pack_slots, pad_classes, pad_features, pad_hidden,
                     pad_samples, packed_views, settings_of, table_for, unpack)
from .products import with_tiles
from .steps import (_backward, _bias_update, _columns_norm, _input_product,
                    _load_minibatch, _logits, _optimizer_coefs, _optimizer_rule,
                    _overwrite_coefs, _relu_bias, _scratch, _squared_norm, _w1_product,
                    _w2_update, _xent_grad)


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
