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
from ._alloc import empty, zeros
from ._jit import jit
from .compile_aside import compiled_aside
from .cpus import available_cpus
from .grid import Config, assign_workers, group_configs, pack_groups
from .interrupts import interrupts_never_lost, noted_interrupts
from .optimizers import init_state, make_optimizer
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


def seconds_per_cycle(c0: int, t0: float) -> float:
    """Seconds per tick of :func:`_cycles` (a constant-rate TSC), measured from the
    readings (c0 of _cycles, t0 of time.perf_counter) taken together earlier."""
    dc, dt = int(_cycles()) - int(c0), time.perf_counter() - t0
    return dt / dc if dc > 0 else 0.0


# Rows of the stacked arrays _sweep reads and writes (each argument of a parallel kernel
# costs compile time: see _sweep).  Per group g, ``g_int[G_*, g]``:
G_BATCH, G_HIDDEN, G_EPOCHS, G_OFF, G_OPT = range(5)
# ...and ``g_rate[G_LR, g]``, ``g_rate[G_ALPHA, g]`` in the model dtype;
G_LR, G_ALPHA = range(2)
# per configuration c, ``c_int[C_*, c]``;
C_GROUP, C_EPOCHS, C_OFF = range(3)
# per group and epoch, ``curves[TRAIN_LOSS, g, e]`` and the other three;
TRAIN_LOSS, TRAIN_XENT, VAL_LOSS, VAL_ACC = range(4)
# per group, ``progress[DONE, g]`` (epochs done) and ``progress[DIVERGED, g]`` (0 or 1).
DONE, DIVERGED = range(2)


@jit
def _run_worker(w, train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders, plan, packs,
                g_int, g_rate, g_limit, g_settings, state, slots, c_int, snaps,
                curves, clocks, progress, stop):
    """Worker w's share of :func:`_sweep`: the packs ``plan[w]``, in order (arguments as
    there).

    The body of _sweep's parallel loop, as a kernel of its own that _sweep reaches through a
    function pointer: numba's parfor passes type, lower and optimise a loop body again for
    the gufunc they wrap it in, and linked by name it would be optimised again at every
    level.  Compiling both from an empty cache took 5.4 s against 7.4 s for the body inside
    the loop (numba's compile events, one core).
    """
    Dp = kernels.pad_features(X.shape[1])
    Nv = Xv.shape[0]
    no_proba = empty((0, 0, 0), state.dtype)
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
            train_epoch(X, table, y, orders[e], g_int[G_BATCH, first], lr, alpha, limit, state,
                        off, hidden, K, alive, losses, xents, opt, settings, slots, steps, tiles)
            validate(Xv, table, state, off, hidden, K, alive, yv, ces, corrects, no_proba,
                     kernels.NO_PROBA, tiles)
            for m in range(P):
                g = members[m]
                if not alive[m]:
                    progress[DIVERGED, g] = 1
                    continue
                curves[TRAIN_LOSS, g, e] = losses[m]
                curves[TRAIN_XENT, g, e] = xents[m]
                curves[VAL_LOSS, g, e] = ces[m] / Nv
                curves[VAL_ACC, g, e] = corrects[m] / Nv
                size = kernels.packed_size(kernels.pad_hidden(hidden[m]), Dp, K)
                for c in range(c_int.shape[1]):
                    if c_int[C_GROUP, c] == g and c_int[C_EPOCHS, c] == e + 1:
                        # A loop, not a slice assignment: that one's shape-mismatch
                        # error path alone took 3 s to compile.
                        for i in range(size):
                            snaps[c_int[C_OFF, c] + i] = state[off[m] + i]
                clocks[g, e + 1] = _cycles()
                progress[DONE, g] = e + 1
            living = 0
            for m in range(P):
                living += alive[m]
            if living == 0:
                break


@jit(parallel=True, cache=True)
def _sweep(run_worker, train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders, plan,
           packs, g_int, g_rate, g_limit, g_settings, state, slots, c_int, snaps,
           curves, clocks, progress, stop):
    """Train every pack of the plan; worker w runs the packs ``plan[w]`` in order.

    run_worker: :func:`_run_worker`, which runs worker w's packs; train_epoch, validate:
    kernels.epoch_kernel(g_opt) and kernels._forward_blocks; tiles: kernels._tiles, which
    both take; all four as function pointers (see :func:`_kernel_pointers`); a pack trains
    and is validated together, each epoch.
    X (N, D), y (N,), Xv (Nv, D), yv (Nv,), table: as for kernels._gather (uint8
    X and Xv with their pixel table, or None); K classes; orders (E, N) int64.
    A pack (a row of ``packs``, padded with -1) lists groups with one batch
    size and one epoch count; they train together, each minibatch gathered
    once for all (kernels._train_epoch_many).
    Per group g: g_int (5, G) int64, rows G_BATCH, G_HIDDEN, G_EPOCHS, G_OFF (of its
    packed model in ``state``, 1-D) and G_OPT (its optimiser's code); g_rate (2, G) in
    the model dtype, rows G_LR and G_ALPHA; g_limit (G,) float64, the largest loss
    accepted (reference.divergence_limit); g_settings (G, 4) float64, its optimiser's
    settings; its optimiser state in ``slots`` (2, len(state)) at its offset ((2, 0)
    when all are SGD).
    Per configuration c: c_int (3, C) int64, rows C_GROUP, C_EPOCHS and C_OFF, where in
    ``snaps`` its model is copied when its group completes that epoch.
    Outputs per group: curves (4, G, E) float64, rows TRAIN_LOSS (the objective:
    cross-entropy + L2), TRAIN_XENT (cross-entropy alone), VAL_LOSS (cross-entropy) and
    VAL_ACC; clocks (G, E + 1) uint64, cycle-counter readings at the pack's start (column 0)
    and at the end of each epoch; progress (2, G) int64, rows DONE (epochs done, written
    last, so a reader that sees it may read everything before it) and DIVERGED.
    ``stop[w] != 0`` makes worker w return after its current epoch.  (One
    flag per worker: a read of ``stop[0]`` looks loop-invariant, and numba's
    parfor pass hoists it out of the prange body, so it was never seen.)

    The arrays are stacked because each argument of a parallel kernel costs compile time
    on a first run, in the gufunc numba wraps the loop in: with 36 arguments this kernel
    took 2.6 s to compile, and a toy parallel loop over a function pointer took 2.0 s with
    36 array arguments and 0.95 s with 21 (one core, empty cache).
    """
    for w in numba.prange(plan.shape[0]):
        run_worker(np.int64(w), train_epoch, validate, tiles, X, y, Xv, yv, table, K, orders,
                   plan, packs, g_int, g_rate, g_limit, g_settings, state, slots, c_int, snaps,
                   curves, clocks, progress, stop)


@dataclass
class Record:
    """The result of one configuration.

    The two losses are the same quantity, comparable with each other: the
    mean cross-entropy, without the L2 term.  train_loss averages it over the
    epoch's minibatches (each weighted by its size, at the weights it was
    computed with), val_loss over the validation set after the epoch.
    train_objective is what the optimiser minimised: train_loss plus the L2 term
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

    def __post_init__(self):
        # Kept to 0.1 ms, as results.jsonl stores it: the table a run prints as it
        # trains and the one a rerun prints from the file must read the same.
        self.seconds = round(float(self.seconds), 4)

    def as_dict(self) -> dict:
        def clean(v):  # JSON has no NaN: a diverged value is null
            return None if isinstance(v, float) and not np.isfinite(v) else v
        out = self.config.as_dict()
        out.update(train_loss=clean(self.train_loss),
                   train_objective=clean(self.train_objective), val_loss=clean(self.val_loss),
                   val_accuracy=clean(self.val_accuracy), seconds=self.seconds,
                   diverged=self.diverged,
                   history={k: [clean(x) for x in v] for k, v in self.history.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        def num(v):
            return float("nan") if v is None else float(v)
        config = Config.from_dict(d)
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
    Hp = kernels.pad_hidden.py_func(config.hidden_size)  # as Python: see kernels.to_kernel
    # ~4*D*Hp flops per sample, plus a per-minibatch update of the whole model.
    return config.epochs * (n_samples * Hp + (n_samples / config.batch_size) * Hp * 0.5)


def writable(state: dict) -> dict:
    """An unpickled object's attributes with every array writable.

    Pickle protocol 5, as Dask sends objects between processes, hands large
    arrays over as read-only views of the bytes received.  Numba types a
    read-only array apart from a writable one, so each would compile a second
    specialization of the kernels on every worker (about 20 s), and arrays
    that are trained in place must be writable anyway: copy them, once.
    """
    return {k: v.copy() if isinstance(v, np.ndarray) and not v.flags.writeable else v
            for k, v in state.items()}


@dataclass
class Plan:
    """A grid laid out for :func:`_sweep`: groups, packs, and every array the kernel reads.

    Built once by :func:`make_plan`; a local sweep runs every pack in one
    parallel call, a cluster (:mod:`fastsoftmax.cluster`) runs each pack as a
    task on :meth:`pack_plan`'s slice of it.  Per group g (G of them) and
    configuration c, the arrays are as :func:`_sweep` documents them.
    """

    flat_configs: list  # (group index, Config): groups by group_key, each sorted by epochs
    n_features: int
    n_classes: int
    dtype: np.dtype
    epochs: int  # E, the largest epoch count
    g_batch: np.ndarray
    g_lr: np.ndarray
    g_alpha: np.ndarray
    g_limit: np.ndarray
    g_hidden: np.ndarray
    g_epochs: np.ndarray
    g_off: np.ndarray
    state: np.ndarray
    g_size: np.ndarray  # length of each group's packed model in state
    g_opt: np.ndarray
    g_settings: np.ndarray
    slots: np.ndarray  # (2, len(state)), or (2, 0) when every group is plain SGD
    c_group: np.ndarray
    c_epochs: np.ndarray
    c_off: np.ndarray
    c_size: list
    g_cost: list
    packs: list  # of lists of group indices

    def __setstate__(self, state):
        self.__dict__.update(writable(state))

    def outputs(self) -> "Outputs":
        return Outputs.empty(len(self.g_batch), self.epochs)

    def pack_plan(self, p: int) -> "Plan":
        """The plan of pack ``p`` alone: its groups renumbered 0..P-1, their
        starting weights and configurations, and one pack.  Training it gives
        bit for bit what the whole plan gives those groups."""
        members = self.packs[p]
        cis = [ci for ci, (gi, _) in enumerate(self.flat_configs) if gi in members]
        renumber = {gi: i for i, gi in enumerate(members)}
        def part(flat):
            return np.concatenate([flat[self.g_off[g]:self.g_off[g] + self.g_size[g]]
                                   for g in members])
        state = part(self.state)
        slots = self.slots if self.slots.shape[1] == 0 else np.stack([part(r) for r in self.slots])
        c_size = [self.c_size[ci] for ci in cis]
        return Plan(
            flat_configs=[(renumber[self.flat_configs[ci][0]], self.flat_configs[ci][1])
                          for ci in cis],
            n_features=self.n_features, n_classes=self.n_classes, dtype=self.dtype,
            epochs=int(self.g_epochs[members].max()),
            g_batch=self.g_batch[members], g_lr=self.g_lr[members],
            g_alpha=self.g_alpha[members], g_limit=self.g_limit[members],
            g_hidden=self.g_hidden[members], g_epochs=self.g_epochs[members],
            g_off=kernels.offsets(self.g_size[members]), state=state,
            g_size=self.g_size[members], g_opt=self.g_opt[members],
            g_settings=self.g_settings[members], slots=slots,
            c_group=np.array([renumber[self.flat_configs[ci][0]] for ci in cis], np.int64),
            c_epochs=self.c_epochs[cis], c_off=kernels.offsets(c_size), c_size=c_size,
            g_cost=[self.g_cost[g] for g in members], packs=[list(range(len(members)))])


@dataclass
class Outputs:
    """What :func:`_sweep` writes per group, in the stacked arrays it takes: ``curves``
    (4, G, E) float64, ``clocks`` (G, E + 1) uint64 and ``progress`` (2, G) int64, laid
    out as _sweep documents them.  (The models' snapshots go to a flat ``snaps`` array
    beside it.)  The properties are views into them, by name: (G, E) losses, accuracies
    and epoch end times (cycle-counter readings), (G,) start times, epochs done and
    divergence (0 or 1); a write to one writes to the stacked array."""

    curves: np.ndarray
    clocks: np.ndarray
    progress: np.ndarray

    @classmethod
    def empty(cls, G: int, E: int) -> "Outputs":
        return cls(np.full((4, G, E), np.nan), np.zeros((G, E + 1), np.uint64),
                   np.zeros((2, G), np.int64))

    train_loss = property(lambda self: self.curves[TRAIN_LOSS])
    train_xent = property(lambda self: self.curves[TRAIN_XENT])
    val_loss = property(lambda self: self.curves[VAL_LOSS])
    val_acc = property(lambda self: self.curves[VAL_ACC])
    epoch_end = property(lambda self: self.clocks[:, 1:])
    g_start = property(lambda self: self.clocks[:, 0])
    epochs_done = property(lambda self: self.progress[DONE])
    diverged = property(lambda self: self.progress[DIVERGED])


def make_plan(configs: list[Config], X, X_val, *, n_classes: int = 10, seed: int = 0,
              dtype=None, pack_size: int = PACK_SIZE) -> Plan:
    """Group, initialise and pack ``configs`` for training on X (N, D); see :func:`run_sweep`."""
    if X.dtype != X_val.dtype:
        raise ValueError(f"X_val has dtype {X_val.dtype} but X has {X.dtype}")
    if dtype is None:
        dtype = np.float32 if X.dtype == np.uint8 else X.dtype
    dtype = np.dtype(dtype)
    if X.dtype != np.uint8 and X.dtype != dtype:
        raise ValueError(f"X has dtype {X.dtype} but the model dtype is {dtype}")
    N, D = X.shape
    K = n_classes
    groups = group_configs(configs)
    heads = [g[-1] for g in groups]  # each group's largest epoch count
    # every group of a hidden size starts from the same weights
    inits = {h: init_params(D, h, K, seed=seed, dtype=dtype)
             for h in {c.hidden_size for c in heads}}
    models = [inits[c.hidden_size] for c in heads]
    state, g_off, g_hidden = kernels.pack(models)
    g_size = np.diff(g_off, append=state.size)
    flat_configs = [(gi, c) for gi, grp in enumerate(groups) for c in grp]
    c_size = [int(g_size[gi]) for gi, _ in flat_configs]
    g_cost = [cost(c, N) for c in heads]
    packs = pack_groups([(c.batch_size, c.epochs) for c in heads], g_cost, pack_size,
                        [size * dtype.itemsize for size in g_size], PACK_BYTES)
    optimizers = [make_optimizer(c.optimizer) for c in heads]
    g_opt, g_settings = kernels.settings_of(optimizers)
    slots = kernels.pack_slots(models, g_off, [init_state(o, m)
                                               for o, m in zip(optimizers, models)])
    return Plan(
        flat_configs=flat_configs, n_features=D,
        n_classes=K, dtype=dtype, epochs=max(c.epochs for c in configs),
        g_batch=np.array([c.batch_size for c in heads], np.int64),
        g_lr=np.array([c.learning_rate for c in heads], dtype),
        g_alpha=np.array([c.alpha for c in heads], dtype),
        g_limit=np.array([reference.divergence_limit(inits[c.hidden_size], c.alpha, K)
                          for c in heads]),
        g_hidden=g_hidden, g_epochs=np.array([c.epochs for c in heads], np.int64),
        g_off=g_off, state=state, g_size=g_size, g_opt=g_opt, g_settings=g_settings,
        slots=slots, c_group=np.array([gi for gi, _ in flat_configs], np.int64),
        c_epochs=np.array([c.epochs for _, c in flat_configs], np.int64),
        c_off=kernels.offsets(c_size), c_size=c_size, g_cost=g_cost, packs=packs)


def _epoch_args(plan: Plan, X, y, table, orders) -> tuple:
    """The types of the arguments :func:`_sweep` passes the epoch kernel."""
    typeof, vector = numba.typeof, types.Array
    return (typeof(X), typeof(table), typeof(y), typeof(orders[0]), types.int64,
            typeof(plan.g_lr), typeof(plan.g_alpha), typeof(plan.g_limit), typeof(plan.state),
            typeof(plan.g_off), typeof(plan.g_hidden), types.int64,
            vector(types.bool_, 1, "C"), vector(types.float64, 1, "C"),
            vector(types.float64, 1, "C"), typeof(plan.g_opt), typeof(plan.g_settings),
            typeof(plan.slots), vector(types.int64, 1, "C"), kernels.tiles_pointer(plan.dtype))


def _kernel_pointers(plan: Plan, X, y, X_val, y_val, table, orders):
    """Types of the function pointers :func:`_sweep` takes: the epoch kernel
    and kernels._forward_blocks, for the arguments _sweep passes them.

    _sweep takes the two kernels as pointers, not by name.  Called by name, a kernel
    is linked into _sweep, and numba optimises and emits linked code again at every
    level it passes through: the parallel loop's body, its two gufunc wrappers and
    _sweep itself, four times in all.  Through pointers, those levels hold only
    _sweep's own code, and each kernel is compiled once: the same machine code that
    fs.train and fs.evaluate run.
    """
    typeof, vector = numba.typeof, types.Array
    dt = typeof(plan.state).dtype
    epoch = types.FunctionType(types.none(*_epoch_args(plan, X, y, table, orders)))
    ints = vector(types.int64, 1, "C")
    validate = types.FunctionType(types.none(
        typeof(X_val), typeof(table), typeof(plan.state), ints, ints, types.int64,
        vector(types.bool_, 1, "C"), typeof(y_val), vector(types.float64, 1, "C"), ints,
        vector(dt, 3, "C"), types.boolean, kernels.tiles_pointer(plan.dtype)))
    return epoch, validate


def run_plan(plan: Plan, X, y, X_val, y_val, table, orders, workers_plan, out: Outputs,
             snaps, stop):
    """Run :func:`_sweep` on ``plan`` in place: worker w trains packs ``workers_plan[w]``."""
    g_int = np.stack([plan.g_batch, plan.g_hidden, plan.g_epochs, plan.g_off, plan.g_opt])
    c_int = np.stack([plan.c_group, plan.c_epochs, plan.c_off])
    args = (X, y, X_val, y_val, table, plan.n_classes, orders, workers_plan,
            _rows_padded(plan.packs), g_int, np.stack([plan.g_lr, plan.g_alpha]), plan.g_limit,
            plan.g_settings, plan.state, plan.slots, c_int, snaps, out.curves, out.clocks,
            out.progress, stop)
    epoch, validate = _kernel_pointers(plan, X, y, X_val, y_val, table, orders)
    arg_types = tuple(numba.typeof(a) for a in args)
    tiles = kernels.tiles_pointer(plan.dtype)
    worker = types.FunctionType(types.none(types.int64, epoch, validate, tiles, *arg_types))
    # compile() loads from numba's cache or compiles, once per signature.  On a first
    # run the epoch kernel, the largest, compiles in a second process meanwhile, and its
    # typing compiles the small callees it shares with the validation kernel (the packed
    # views, the scratch, then the gather, 1.2-2 s after the child starts).  Whichever
    # process has cached a callee when the other asks for it saves the other that
    # compile.  The child is the first run's critical path, so this process takes the
    # gather (0.4 s) off it, compiling it first; then _tiles, which the kernels take as
    # a pointer (the child does not need it), the worker and the parallel shell, and the
    # validation kernel last, loading the callees the child has cached meanwhile.
    # Timelines of first runs: the child's epoch kernel ends 0-1.4 s after this
    # process's last compile (three runs).
    train_epoch = kernels.epoch_kernel(plan.g_opt)
    with compiled_aside(train_epoch, epoch.signature.args):
        kernels._gather.compile(kernels.gather_types(X, table, plan.dtype))
        kernels._tiles.compile(kernels.tiles_types(plan.dtype))
        _run_worker.compile(worker.signature.args)
        sweep = _sweep.compile((worker, epoch, validate, tiles) + arg_types)
        kernels._forward_blocks.compile(validate.signature.args)
    sweep(_run_worker, train_epoch, kernels._forward_blocks, kernels._tiles, *args)


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
                "train_objective": out.train_loss[gi, :last].tolist(),
                "val_loss": out.val_loss[gi, :last].tolist(),
                "val_accuracy": out.val_acc[gi, :last].tolist()}
        if failed:
            rec = Record(c, np.nan, np.nan, np.nan, 0.0, True, hist)
        else:
            rec = Record(c, float(out.train_xent[gi, last - 1]), float(out.val_loss[gi, last - 1]),
                         float(out.val_acc[gi, last - 1]), seconds(gi, last), False, hist,
                         train_objective=float(out.train_loss[gi, last - 1]))
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
    plan = make_plan(configs, X, X_val, n_classes=n_classes, seed=seed, dtype=dtype,
                     pack_size=pack_size)
    table = kernels.table_for(X, plan.dtype)
    orders = minibatch_orders(X.shape[0], plan.epochs, seed)
    out = plan.outputs()
    snaps = np.zeros(int(sum(plan.c_size)), plan.dtype)
    W = max(1, min(workers, available_cpus().count, len(plan.packs)))
    workers_plan = _rows_padded(assign_workers(
        [sum(plan.g_cost[g] for g in p) for p in plan.packs], W))
    stop = np.zeros(W, np.int64)

    def run(rows):
        run_plan(plan, X, y, X_val, y_val, table, orders, rows, out, snaps, stop)

    # Compile (or load from the cache) here, with no work to do: Ctrl-C
    # reaches this thread and stops a compile at once, where in the worker
    # thread it could only wait for the compile to end.
    if on_phase is not None:
        on_phase("compile", W)
    with interrupts_never_lost():
        run(workers_plan[:0])
    _cycles()
    if on_phase is not None:
        on_phase("train", W)

    error: list[BaseException] = []

    def work():
        try:
            with threadpool_limits(limits=1):  # no BLAS threads inside the parallel region
                run(workers_plan)
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    previous_threads = numba.get_num_threads()
    numba.set_num_threads(W)
    records: dict[int, Record] = {}
    total_epochs = int(plan.g_epochs.sum())

    # Cycles to seconds, calibrated over the whole run.
    c0, t0 = _cycles(), time.perf_counter()

    def seconds(gi, last) -> float:
        cycles = int(out.epoch_end[gi, last - 1]) - int(out.g_start[gi])
        return cycles * seconds_per_cycle(c0, t0)

    def collect():
        for rec in new_records(plan, out, records, seconds):
            if on_record is not None:
                on_record(rec)

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
                        on_progress(int(np.minimum(out.epochs_done, plan.g_epochs).sum()),
                                    total_epochs)
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
    ordered = [records[ci] for ci in sorted(records)]
    return SweepOutput(ordered, trained_params(plan, records, snaps), interrupted)


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main())
