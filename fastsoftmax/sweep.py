"""Parallel grid search: every configuration trained concurrently in compiled code.

``python -m fastsoftmax.sweep`` runs the command line (:mod:`fastsoftmax.cli`);
this module is the engine: :func:`run_sweep` packs the groups of a grid into
flat arrays and runs :func:`_sweep` across the cores with ``numba.prange``.

Groups (configurations differing only in epochs) that share a batch size and
an epoch count see the same minibatches, so they train in packs: each
minibatch is gathered from memory once and then trains every model of the
pack (kernels._train_epoch_many).

Determinism: each pack is trained start to finish by one thread with the
serial kernels, and each model of a pack sees exactly the operations it would
alone, so every floating-point reduction of a configuration happens in one
thread in one order, and the results are bit-identical whatever the number of
workers or the packing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from threadpoolctl import threadpool_limits

from . import kernels, reference
from ._jit import jit
from .cpus import available_cpus
from .grid import Config, assign_workers, group_configs, pack_groups
from .interrupts import noted_interrupts
from .params import init_params, minibatch_orders


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


@jit(parallel=True, cache=True)
def _sweep(X, y, Xv, yv, table, K, orders, plan, packs,
           g_batch, g_lr, g_alpha, g_limit, g_hidden, g_epochs, g_off, state,
           c_group, c_epochs, c_off, snaps,
           train_loss, train_xent, val_loss, val_acc, epoch_end, g_start, epochs_done,
           diverged, stop):
    """Train every pack of the plan; worker w runs the packs ``plan[w]`` in order.

    X (N, D), y (N,), Xv (Nv, D), yv (Nv,), table: as for kernels._gather (uint8
    X and Xv with their pixel table, or None); K classes; orders (E, N) int64.
    A pack (a row of ``packs``, padded with -1) lists groups with one batch
    size and one epoch count; they train together, each minibatch gathered
    once for all (kernels._train_epoch_many).
    Per group g: batch size, lr, alpha (of the model dtype), the largest loss
    accepted (float64, reference.divergence_limit), padded hidden size,
    epoch count, and the offset of its packed model in ``state`` (1-D).
    Per configuration c: its group, epoch count, and the offset in ``snaps``
    where its model is copied when the group completes that epoch.
    Outputs per group: train_loss (the objective: cross-entropy + L2),
    train_xent (cross-entropy alone), val_loss (cross-entropy), val_acc, epoch_end (G, E) and
    g_start (G,) as cycle-counter readings; epochs_done (G,) written last, so a reader that sees it
    may read everything before it; diverged (G,).
    ``stop[w] != 0`` makes worker w return after its current epoch.  (One
    flag per worker: a read of ``stop[0]`` looks loop-invariant, and numba's
    parfor pass hoists it out of the prange body, so it was never seen.)
    """
    Dp = kernels.pad_features(X.shape[1])
    Nv = Xv.shape[0]
    for w in numba.prange(plan.shape[0]):
        no_proba = np.empty((0, 0), state.dtype)
        for t in range(plan.shape[1]):
            p = plan[w, t]
            if p < 0 or stop[w] != 0:
                break
            P = 0
            while P < packs.shape[1] and packs[p, P] >= 0:
                P += 1
            members = packs[p, :P].copy()
            first = members[0]
            alive = np.ones(P, np.bool_)
            losses = np.empty(P)
            xents = np.empty(P)
            started = _cycles()
            for m in range(P):
                g_start[members[m]] = started
            for e in range(g_epochs[first]):
                if stop[w] != 0:
                    break
                kernels._train_epoch_many(X, table, y, orders[e], g_batch[first],
                                          g_lr[members], g_alpha[members],
                                          g_limit[members], state,
                                          g_off[members], g_hidden[members], K, alive, losses,
                                          xents)
                for m in range(P):
                    g = members[m]
                    if not alive[m]:
                        diverged[g] = True
                        continue
                    Hp = g_hidden[g]
                    W1, b1, W2, b2 = kernels.packed_views(state, g_off[g], Hp, Dp, K)
                    ce, correct = kernels._forward_blocks(Xv, table, W1, b1, W2, b2, yv,
                                                          no_proba, False)
                    train_loss[g, e] = losses[m]
                    train_xent[g, e] = xents[m]
                    val_loss[g, e] = ce / Nv
                    val_acc[g, e] = correct / Nv
                    size = kernels.packed_size(Hp, Dp, K)
                    for c in range(c_group.shape[0]):
                        if c_group[c] == g and c_epochs[c] == e + 1:
                            snaps[c_off[c]:c_off[c] + size] = state[g_off[g]:g_off[g] + size]
                    epoch_end[g, e] = _cycles()
                    epochs_done[g] = e + 1
                if not alive.any():
                    break


@dataclass
class Record:
    """The result of one configuration.

    The two losses are the same quantity, comparable with each other: the
    mean cross-entropy, without the L2 term.  train_loss averages it over the
    epoch's minibatches (each weighted by its size, at the weights it was
    computed with), val_loss over the validation set after the epoch.
    train_objective is what SGD minimised: train_loss plus the L2 term
    (alpha/2)(||W1||^2 + ||W2||^2), averaged the same way.

    history holds per-epoch lists train_loss, train_objective, val_loss,
    val_accuracy (up to the configuration's epochs, or to the epoch before
    divergence).  Final values are those of the last epoch; NaN when the
    configuration diverged.
    seconds is the wall time from the start of the configuration's pack to the
    end of its last epoch (the models of a pack train together and share it).
    """

    config: Config
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    diverged: bool
    history: dict = field(default_factory=dict)
    train_objective: float = float("nan")

    def as_dict(self) -> dict:
        def clean(v):  # JSON has no NaN: a diverged value is null
            return None if isinstance(v, float) and not np.isfinite(v) else v
        out = self.config.as_dict()
        out.update(train_loss=clean(self.train_loss),
                   train_objective=clean(self.train_objective), val_loss=clean(self.val_loss),
                   val_accuracy=clean(self.val_accuracy), seconds=round(self.seconds, 4),
                   diverged=self.diverged,
                   history={k: [clean(x) for x in v] for k, v in self.history.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        def num(v):
            return float("nan") if v is None else float(v)
        config = Config(int(d["batch_size"]), float(d["learning_rate"]), int(d["epochs"]),
                        float(d["alpha"]), int(d["hidden_size"]))
        history = {k: [num(x) for x in v] for k, v in d["history"].items()}
        if "train_objective" not in d or "train_objective" not in d["history"]:
            # Before it, train_loss held the objective: refuse rather than mislabel.
            raise KeyError("train_objective")
        return cls(config, num(d["train_loss"]), num(d["val_loss"]), num(d["val_accuracy"]),
                   float(d["seconds"]), bool(d["diverged"]), history,
                   num(d["train_objective"]))

    def rank_key(self):
        """Best first: highest validation accuracy, then lowest validation loss."""
        acc = self.val_accuracy if np.isfinite(self.val_accuracy) else -1.0
        loss = self.val_loss if np.isfinite(self.val_loss) else np.inf
        return (-acc, loss, self.config)


@dataclass
class SweepOutput:
    records: list  # Record per configuration, in grid order
    params: dict  # Config -> Params of the trained model (not for diverged ones)
    interrupted: bool


def _rows_padded(lists) -> np.ndarray:
    """Lists of ints as the rows of an int64 array, padded with -1 (how kernels read them)."""
    out = np.full((len(lists), max(len(row) for row in lists)), -1, np.int64)
    for i, row in enumerate(lists):
        out[i, :len(row)] = row
    return out


# Groups trained together at most: each minibatch is gathered once for a pack.
PACK_SIZE = 4
# ...and the most bytes of weights a pack may hold.  The weights of four
# 40-unit models (0.5 MiB) stay in a core's L2 cache between their turns, and
# packs of four models with 128 to 256 hidden units ran 5-10% slower than the
# models alone (every model's weights evicted by the others' at each step).
PACK_BYTES = 1 << 20


def cost(config: Config, n_samples: int) -> float:
    """Relative training cost of a group whose largest epoch count is config.epochs."""
    Hp = kernels.pad_hidden(config.hidden_size)
    # ~4*D*Hp flops per sample, plus a per-minibatch update of the whole model.
    return config.epochs * (n_samples * Hp + (n_samples / config.batch_size) * Hp * 0.5)


def run_sweep(configs: list[Config], X, y, X_val, y_val, *, n_classes: int = 10,
              workers: int = 1, seed: int = 0, on_record=None, on_progress=None,
              on_phase=None, poll_seconds: float = 0.2, dtype=None,
              pack_size: int = PACK_SIZE) -> SweepOutput:
    """Train every configuration on (X, y), validating on (X_val, y_val).

    X, X_val : (n, D) arrays, validated: both of the model dtype (float32 or
        float64), or both uint8 pixels (scaled by 1/255 as they are read)
    dtype : the model dtype; defaults to X's, or float32 for uint8 X
    y, y_val : (n,) int64
    workers : threads for the parallel region (numba); BLAS is held to 1.
        At most the CPUs this process may use (:func:`fastsoftmax.cpus.available_cpus`:
        affinity mask, cgroup quota, numba's pool): more would only queue, and
        the results do not depend on it
    seed : initialisation and minibatch order (shared by all configurations)
    on_record(Record) : called as each configuration finishes
    on_progress(epochs_done, epochs_total) : called every ``poll_seconds``
    on_phase(name, workers) : called with "compile" before the kernels are
        compiled (or loaded from numba's cache) and "train" before training
        starts; workers is how many threads will train
    pack_size : at most this many groups train together, holding at most
        PACK_BYTES of weights (same results for any value; fewer, larger packs
        share more memory traffic but leave fewer jobs to balance across
        workers, and weights that outgrow the cache)

    Ctrl-C (SIGINT) while training stops every worker after its current
    epoch; the finished configurations are returned with ``interrupted``
    (on_record is never cut short).  Compilation runs in the calling thread
    before training, so Ctrl-C there raises KeyboardInterrupt as usual.
    """
    if X.dtype != X_val.dtype:
        raise ValueError(f"X_val has dtype {X_val.dtype} but X has {X.dtype}")
    if dtype is None:
        dtype = np.float32 if X.dtype == np.uint8 else X.dtype
    dtype = np.dtype(dtype)
    if X.dtype != np.uint8 and X.dtype != dtype:
        raise ValueError(f"X has dtype {X.dtype} but the model dtype is {dtype}")
    table = kernels.table_for(X, dtype)
    N, D = X.shape
    K = n_classes
    groups = group_configs(configs)
    G = len(groups)
    E = max(c.epochs for c in configs)
    orders = minibatch_orders(N, E, seed)

    heads = [g[-1] for g in groups]  # each group's largest epoch count
    g_batch = np.array([c.batch_size for c in heads], np.int64)
    g_lr = np.array([c.learning_rate for c in heads], dtype)
    g_alpha = np.array([c.alpha for c in heads], dtype)
    g_epochs = np.array([c.epochs for c in heads], np.int64)
    Dp = kernels.pad_features(D)
    # every group of a hidden size starts from the same weights
    inits = {h: init_params(D, h, K, seed=seed, dtype=dtype)
             for h in {c.hidden_size for c in heads}}
    state, g_off, g_hidden = kernels.pack([inits[c.hidden_size] for c in heads])
    g_limit = np.array([reference.divergence_limit(inits[c.hidden_size], c.alpha, K)
                        for c in heads])
    sizes = np.diff(g_off, append=state.size)

    flat_configs = [(gi, c) for gi, grp in enumerate(groups) for c in grp]
    c_group = np.array([gi for gi, _ in flat_configs], np.int64)
    c_epochs = np.array([c.epochs for _, c in flat_configs], np.int64)
    c_sizes = [sizes[gi] for gi, _ in flat_configs]
    c_off = kernels.offsets(c_sizes)
    snaps = np.zeros(int(sum(c_sizes)), dtype)

    train_loss = np.full((G, E), np.nan)
    train_xent = np.full((G, E), np.nan)
    val_loss = np.full((G, E), np.nan)
    val_acc = np.full((G, E), np.nan)
    epoch_end = np.zeros((G, E), np.uint64)  # cycle counter readings
    g_start = np.zeros(G, np.uint64)
    epochs_done = np.zeros(G, np.int64)
    diverged = np.zeros(G, np.bool_)

    g_cost = [cost(c, N) for c in heads]
    pack_list = pack_groups([(c.batch_size, c.epochs) for c in heads], g_cost, pack_size,
                            [size * dtype.itemsize for size in sizes], PACK_BYTES)
    packs = _rows_padded(pack_list)
    W = max(1, min(workers, available_cpus().count, len(pack_list)))
    plan = _rows_padded(assign_workers([sum(g_cost[g] for g in p) for p in pack_list], W))
    stop = np.zeros(W, np.int64)

    def run(plan):
        _sweep(X, y, X_val, y_val, table, K, orders, plan, packs, g_batch, g_lr, g_alpha,
               g_limit, g_hidden, g_epochs, g_off, state, c_group, c_epochs, c_off, snaps,
               train_loss, train_xent, val_loss, val_acc, epoch_end, g_start, epochs_done,
               diverged, stop)

    # Compile (or load from the cache) here, with no work to do: Ctrl-C
    # reaches this thread and stops a compile at once, where in the worker
    # thread it could only wait for the compile to end.
    if on_phase is not None:
        on_phase("compile", W)
    run(plan[:0])
    _cycles()
    if on_phase is not None:
        on_phase("train", W)

    error: list[BaseException] = []

    def work():
        try:
            with threadpool_limits(limits=1):  # no BLAS threads inside the parallel region
                run(plan)
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    previous_threads = numba.get_num_threads()
    numba.set_num_threads(W)
    records: dict[int, Record] = {}
    total_epochs = int(g_epochs.sum())

    def collect():
        """Emit the records of configurations whose group got far enough."""
        done = epochs_done.copy()  # read progress first: what it covers is written
        div = diverged.copy()
        for ci, (gi, c) in enumerate(flat_configs):
            if ci in records:
                continue
            reached = done[gi] >= c.epochs
            failed = div[gi] and done[gi] < c.epochs
            if not (reached or failed):
                continue
            last = min(int(done[gi]), c.epochs)
            hist = {"train_loss": train_xent[gi, :last].tolist(),
                    "train_objective": train_loss[gi, :last].tolist(),
                    "val_loss": val_loss[gi, :last].tolist(),
                    "val_accuracy": val_acc[gi, :last].tolist()}
            if failed:
                rec = Record(c, np.nan, np.nan, np.nan, 0.0, True, hist)
            else:
                rec = Record(c, float(train_xent[gi, last - 1]), float(val_loss[gi, last - 1]),
                             float(val_acc[gi, last - 1]),
                             seconds(int(epoch_end[gi, last - 1]) - int(g_start[gi])), False, hist,
                             train_objective=float(train_loss[gi, last - 1]))
            records[ci] = rec
            if on_record is not None:
                on_record(rec)

    # Cycles to seconds, calibrated over the whole run (constant-rate TSC).
    c0, t0 = _cycles(), time.perf_counter()

    def seconds(cycles) -> float:
        dc, dt = int(_cycles()) - int(c0), time.perf_counter() - t0
        return float(cycles) * dt / dc if dc > 0 else 0.0

    interrupted = False
    thread = threading.Thread(target=work, name="fastsoftmax-sweep", daemon=True)
    # Ctrl-C is noted, not raised, so that it never lands between a record
    # being taken and on_record having written it.
    with noted_interrupts() as ctrl_c:
        try:
            thread.start()
            while thread.is_alive():
                try:
                    thread.join(poll_seconds)
                    collect()
                    if on_progress is not None:
                        on_progress(int(np.minimum(epochs_done, g_epochs).sum()), total_epochs)
                except KeyboardInterrupt:  # where SIGINT has a handler of its own
                    interrupted = True
                if ctrl_c.requested:
                    interrupted = True
                if interrupted:
                    stop[:] = 1  # workers return after their current epoch
        finally:
            if thread.is_alive():
                stop[:] = 1
                thread.join()
            numba.set_num_threads(previous_threads)
    if error:
        raise error[0]
    collect()
    params = {}
    for ci, (gi, c) in enumerate(flat_configs):
        rec = records.get(ci)
        if rec is not None and not rec.diverged:
            packed = snaps[c_off[ci]:c_off[ci] + c_sizes[ci]]
            views = kernels.packed_views(packed, 0, int(g_hidden[gi]), Dp, K)
            params[c] = kernels.from_kernel(*views, D, c.hidden_size)
    ordered = [records[ci] for ci in sorted(records)]
    return SweepOutput(ordered, params, interrupted)


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main())
