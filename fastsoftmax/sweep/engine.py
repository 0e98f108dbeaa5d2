"""The sweep's engine: every pack of a plan trained concurrently in compiled code.

:func:`run_plan` runs :func:`_sweep` across the cores with ``numba.prange``;
each worker trains its packs with the epoch and evaluation kernels, which it
takes as function pointers.

Determinism: each pack is trained start to finish by one thread with the
serial kernels, and each model of a pack sees exactly the operations it would
alone, so every floating-point reduction of a configuration happens in one
thread in one order, and the results are bit-identical whatever the number of
workers or the packing.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import kernels
from ..kernels._alloc import empty, zeros
from ..kernels.compile_aside import compiled_aside
from ..kernels.epoch import epoch_types
from ..kernels.evaluation import NO_PROBA, _forward_blocks, forward_types
from ..kernels.jit import jit
from ..kernels.layout import n_features
from ..kernels.products import _tiles, tiles_pointer, tiles_types
from ..kernels.steps import _gather, gather_types
from .plan import (C_EPOCHS, C_GROUP, C_OFF, DIVERGED, DONE, G_ALPHA, G_BATCH, G_EPOCHS,
                   G_HIDDEN, G_LR, G_OFF, G_OPT, OBJECTIVE, TRAIN_XENT, VAL_ACC, VAL_LOSS,
                   Outputs, Plan, RunData, _rows_padded)
from .results import Record


@intrinsic
def _read_cycle_counter(typingctx):
    """The CPU's cycle counter (llvm.readcyclecounter), as uint64.

    Used to time epochs inside compiled code; unlike a ctypes call to
    clock_gettime, an intrinsic lets the parallel kernel be cached.
    """
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.uint64(), codegen


@jit
def _cycles():
    return _read_cycle_counter()


def seconds_per_cycle(c0: int, t0: float) -> float:
    """Seconds per tick of :func:`_cycles` (a constant-rate TSC), measured from the
    readings (c0 of _cycles, t0 of time.perf_counter) taken together earlier."""
    dc, dt = int(_cycles()) - int(c0), time.perf_counter() - t0
    return dt / dc if dc > 0 else 0.0



@jit
def _run_worker(w, train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders, plan, packs,
                g_int, g_rate, g_limit, g_settings, weights, slots, c_int, snaps,
                curves, clocks, progress, stop):
    """Worker w's share of :func:`_sweep`: the packs ``plan[w]``, in order (arguments as
    there).

    The body of _sweep's parallel loop, as a kernel of its own that _sweep reaches through a
    function pointer: numba's parfor passes type, lower and optimise a loop body again for
    the gufunc they wrap it in, and linked by name it would be optimised again at every
    level.  Apart, each is optimised once (docs/speed.md has the compile times).
    """
    Dp = kernels.pad_features(n_features(X, table, weights))
    Nv = Xv.shape[0]
    no_proba = empty((0, 0, 0), weights.dtype)
    for t in range(plan.shape[1]):
        p = plan[w, t]
        if p < 0 or stop[w] != 0:
            break
        P = 0
        while P < packs.shape[1] and packs[p, P] >= 0:
            P += 1
        # The pack's members and their settings, gathered once (both kernels read them
        # every epoch) with a loop: numba compiles each fancy-indexing (g_lr[members])
        # and the .copy() as code of its own, and this shell is compiled on every first run.
        members = empty(P, np.int64)
        lr, alpha, limit = empty(P, g_rate.dtype), empty(P, g_rate.dtype), empty(P, np.float64)
        off, hidden, opt = empty(P, np.int64), empty(P, np.int64), empty(P, np.int64)
        settings = empty((P, g_settings.shape[1]), np.float64)
        for m in range(P):
            g = packs[p, m]
            members[m] = g
            lr[m], alpha[m], limit[m] = g_rate[G_LR, g], g_rate[G_ALPHA, g], g_limit[g]
            off[m], hidden[m], opt[m] = g_int[G_OFF, g], g_int[G_HIDDEN, g], g_int[G_OPT, g]
            for i in range(g_settings.shape[1]):
                settings[m, i] = g_settings[g, i]
        first = members[0]
        alive = empty(P, np.bool_)
        for m in range(P):
            alive[m] = True
        losses = empty(P, np.float64)
        xents = empty(P, np.float64)
        ces = empty(P, np.float64)
        corrects = empty(P, np.int64)
        steps = zeros(P, np.int64)
        started = _cycles()
        for m in range(P):
            clocks[members[m], 0] = started
        for e in range(g_int[G_EPOCHS, first]):
            if stop[w] != 0:
                break
            train_epoch(X, table, y, orders[e], g_int[G_BATCH, first], lr, alpha, limit, weights,
                        off, hidden, K, alive, losses, xents, opt, settings, slots, steps, tiles)
            validate(Xv, table, weights, off, hidden, K, alive, yv, ces, corrects, no_proba,
                     NO_PROBA, tiles)
            for m in range(P):
                g = members[m]
                if not alive[m]:
                    progress[DIVERGED, g] = 1
                    continue
                curves[OBJECTIVE, g, e] = losses[m]
                curves[TRAIN_XENT, g, e] = xents[m]
                curves[VAL_LOSS, g, e] = ces[m] / Nv
                curves[VAL_ACC, g, e] = corrects[m] / Nv
                size = kernels.packed_size(kernels.pad_hidden(hidden[m]), Dp, K)
                for c in range(c_int.shape[1]):
                    if c_int[C_GROUP, c] == g and c_int[C_EPOCHS, c] == e + 1:
                        # A loop, not a slice assignment, whose shape-mismatch error
                        # path costs seconds of a first run's compile.
                        for i in range(size):
                            snaps[c_int[C_OFF, c] + i] = weights[off[m] + i]
                clocks[g, e + 1] = _cycles()
                progress[DONE, g] = e + 1
            living = 0
            for m in range(P):
                living += alive[m]
            if living == 0:
                break


@jit(parallel=True, cache=True)
def _sweep(run_worker, train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders, plan,
           packs, g_int, g_rate, g_limit, g_settings, weights, slots, c_int, snaps,
           curves, clocks, progress, stop):
    """Train every pack of the plan; worker w runs the packs ``plan[w]`` in order.

    run_worker: :func:`_run_worker`, which runs worker w's packs; train_epoch, validate:
    kernels.epoch_kernel(g_opt) and _forward_blocks; tiles: _tiles, which
    both take; all four as function pointers (see :func:`_kernel_pointers`); a pack trains
    and is validated together, each epoch.
    X, Xv: the rows of N and Nv samples, y (N,), yv (Nv,), table: as for _gather
    (kernels.data_rows); K classes; orders (E, N) int64.
    A pack (a row of ``packs``, padded with -1) lists groups with one batch
    size and one epoch count; they train together, each minibatch gathered
    once for all (kernels.epoch).
    Per group g: g_int (5, G) int64, rows G_BATCH, G_HIDDEN, G_EPOCHS, G_OFF (of its
    packed model in ``weights``, 1-D) and G_OPT (its optimiser's code); g_rate (2, G) in
    the model dtype, rows G_LR and G_ALPHA; g_limit (G,) float64, the largest loss
    accepted (reference.divergence_limit); g_settings (G, 4) float64, its optimiser's
    settings; its optimiser weights in ``slots`` (2, len(weights)) at its offset ((2, 0)
    when all are SGD).
    Per configuration c: c_int (3, C) int64, rows C_GROUP, C_EPOCHS and C_OFF, where in
    ``snaps`` its model is copied when its group completes that epoch.
    Outputs per group: curves (4, G, E) float64, rows OBJECTIVE (the objective:
    cross-entropy + L2), TRAIN_XENT (cross-entropy alone), VAL_LOSS (cross-entropy) and
    VAL_ACC; clocks (G, E + 1) uint64, cycle-counter readings at the pack's start (column 0)
    and at the end of each epoch; progress (2, G) int64, rows DONE (epochs done, written
    last, so a reader that sees it may read everything before it) and DIVERGED.
    ``stop[w] != 0`` makes worker w return after its current epoch.  (One
    flag per worker: a read of ``stop[0]`` looks loop-invariant, and numba's
    parfor pass hoists it out of the prange body, so it was never seen.)

    The arrays are stacked because each argument of a parallel kernel costs compile time
    on a first run, in the gufunc numba wraps the loop in.
    """
    for w in numba.prange(plan.shape[0]):
        run_worker(np.int64(w), train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders,
                   plan, packs, g_int, g_rate, g_limit, g_settings, weights, slots, c_int, snaps,
                   curves, clocks, progress, stop)


def _kernel_pointers(plan: Plan, X, y, X_val, y_val, table, orders):
    """Types of the function pointers :func:`_sweep` takes: the epoch kernel
    and _forward_blocks, for the arguments _sweep passes them (as the kernels
    declare them: epoch.epoch_types, evaluation.forward_types).

    _sweep takes the two kernels as pointers, not by name.  Called by name, a kernel
    is linked into _sweep, and numba optimises and emits linked code again at every
    level it passes through: the parallel loop's body, its two gufunc wrappers and
    _sweep itself, four times in all.  Through pointers, those levels hold only
    _sweep's own code, and each kernel is compiled once: the same machine code that
    fs.train and fs.evaluate run.
    """
    epoch = epoch_types(X, table, y, orders[0], plan.dtype)
    validate = forward_types(X_val, table, y_val, plan.dtype)
    return types.FunctionType(types.none(*epoch)), types.FunctionType(types.none(*validate))


def run_plan(plan: Plan, data: RunData, workers_plan, out: Outputs, snaps, stop):
    """Run :func:`_sweep` on ``plan`` in place: worker w trains packs ``workers_plan[w]``."""
    X, y, X_val, y_val, table, orders = (data.X, data.y, data.X_val, data.y_val, data.table,
                                         data.orders)
    args = (X, y, X_val, y_val, table, plan.n_classes, orders, workers_plan,
            _rows_padded(plan.packs), plan.g_int, plan.g_rate, plan.g_limit, plan.g_settings,
            plan.weights, plan.slots, plan.c_int, snaps, out.curves, out.clocks, out.progress,
            stop)
    epoch, validate = _kernel_pointers(plan, X, y, X_val, y_val, table, orders)
    arg_types = tuple(numba.typeof(a) for a in args)
    tiles = tiles_pointer(plan.dtype)
    worker = types.FunctionType(types.none(types.int64, epoch, validate, tiles, *arg_types))
    # compile() loads from numba's cache or compiles, once per signature.  On a first
    # run the epoch kernel, the largest, compiles in a second process meanwhile, and its
    # typing compiles the small callees it shares with the validation kernel (the packed
    # views, the scratch, then the gather).  Whichever process has cached a callee when
    # the other asks for it saves the other that compile.  The child is the first run's
    # critical path, so this process takes the gather off it, compiling it first; then
    # _tiles, which the kernels take as a pointer (the child does not need it), the
    # worker and the parallel shell, and the validation kernel last, loading the callees
    # the child has cached meanwhile.  The two end close together (docs/speed.md).
    train_epoch = kernels.epoch_kernel(plan.g_opt)
    with compiled_aside(train_epoch, epoch.signature.args):
        _gather.compile(gather_types(X, table, plan.dtype))
        _tiles.compile(tiles_types(plan.dtype))
        _run_worker.compile(worker.signature.args)
        sweep = _sweep.compile((worker, epoch, validate, tiles) + arg_types)
        _forward_blocks.compile(validate.signature.args)
    sweep(_run_worker, train_epoch, _forward_blocks, _tiles, *args)


def new_records(plan: Plan, out: Outputs, records: dict, seconds) -> list:
    """Records of configurations whose group got far enough, not yet in ``records``.

    Adds them to ``records`` (configuration index -> Record) and returns them
    in order.  seconds(gi, last) : wall time of group gi from its start to the
    end of epoch ``last``.
    """
    done = out.epochs_done.copy()  # read progress first: what it covers is written
    div = out.diverged.copy()
    fresh = []
    for ci, (gi, c) in enumerate(plan.flat_configs):
        if ci in records:
            continue
        reached = done[gi] >= c.epochs
        failed = div[gi] and done[gi] < c.epochs
        if not (reached or failed):
            continue
        last = min(int(done[gi]), c.epochs)
        hist = {"train_loss": out.train_xent[gi, :last].tolist(),
                "train_objective": out.objective[gi, :last].tolist(),
                "val_loss": out.val_loss[gi, :last].tolist(),
                "val_accuracy": out.val_acc[gi, :last].tolist()}
        if failed:
            rec = Record(c, np.nan, np.nan, np.nan, 0.0, True, hist)
        else:
            rec = Record(c, float(out.train_xent[gi, last - 1]), float(out.val_loss[gi, last - 1]),
                         float(out.val_acc[gi, last - 1]), seconds(gi, last), False, hist,
                         train_objective=float(out.objective[gi, last - 1]))
        records[ci] = rec
        fresh.append(rec)
    return fresh


def trained_params(plan: Plan, records: dict, snaps) -> dict:
    """Config -> Params of every recorded configuration that did not diverge."""
    Dp = kernels.pad_features(plan.n_features)
    params = {}
    for ci, (gi, c) in enumerate(plan.flat_configs):
        rec = records.get(ci)
        if rec is not None and not rec.diverged:
            packed = snaps[plan.c_off[ci]:plan.c_off[ci] + plan.c_size[ci]]
            Hp = kernels.pad_hidden(c.hidden_size)
            views = kernels.packed_views(packed, 0, Hp, Dp, plan.n_classes)
            params[c] = kernels.from_kernel(*views, plan.n_features, c.hidden_size)
    return params
