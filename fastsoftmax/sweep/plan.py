"""A grid laid out for the engine: groups, packs, and every array the kernels read.

Groups (configurations differing only in epochs) that share a batch size and
an epoch count see the same minibatches, so they train in packs: each
minibatch is gathered from memory once and then trains every model of the
pack (kernels.epoch).  :func:`make_plan` builds a :class:`Plan` once; a local
sweep runs every pack of it, a cluster each pack's own :meth:`Plan.pack_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels, reference
from ..optimizers import init_state, make_optimizer
from ..params import init_params, minibatch_orders
from .grid import Config, group_configs, pack_groups

# The rows of the stacked arrays the engine reads and writes, each stacked once (every
# argument of a parallel kernel costs compile time: see engine._sweep) and named here.
# Per group g, int64 ``g_int[row, g]``: batch size, hidden units, epochs, where its
# model starts in ``weights``, its optimiser's code;
G_INT = ("batch", "hidden", "epochs", "off", "opt")
G_BATCH, G_HIDDEN, G_EPOCHS, G_OFF, G_OPT = range(len(G_INT))
# ...and ``g_rate[row, g]`` in the model dtype: learning rate, L2 strength;
G_RATE = ("lr", "alpha")
G_LR, G_ALPHA = range(len(G_RATE))
# per configuration c, int64 ``c_int[row, c]``: its group, its epochs, where its model's
# snapshot goes in ``snaps``;
C_INT = ("group", "epochs", "off")
C_GROUP, C_EPOCHS, C_OFF = range(len(C_INT))
# per group and epoch, ``curves[row, g, e]``: the objective (cross-entropy + L2) and the
# cross-entropy over the epoch's minibatches, the validation cross-entropy and accuracy;
OBJECTIVE, TRAIN_XENT, VAL_LOSS, VAL_ACC = range(4)
# per group, ``progress[DONE, g]`` (epochs done) and ``progress[DIVERGED, g]`` (0 or 1).
DONE, DIVERGED = range(2)


def _row(array, i):
    return property(lambda self: getattr(self, array)[i])


def _rows_padded(lists) -> np.ndarray:
    """Lists of ints as the rows of an int64 array, padded with -1 (how kernels read them)."""
    out = np.full((len(lists), max(len(row) for row in lists)), -1, np.int64)
    for i, row in enumerate(lists):
        out[i, :len(row)] = row
    return out


# Groups trained together at most: each minibatch is gathered once for a pack.
PACK_SIZE = 4
# ...and the most bytes of weights a pack may hold: a pack's weights must stay in a
# core's L2 cache between their turns, or each model's are evicted by the others' at
# every step and the pack runs slower than its models alone (docs/speed.md).
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
    specialization of the kernels on every worker, and arrays
    that are trained in place must be writable anyway: copy them, once.
    """
    return {k: v.copy() if isinstance(v, np.ndarray) and not v.flags.writeable else v
            for k, v in state.items()}


@dataclass
class Plan:
    """A grid laid out for the engine: groups, packs, and every array the kernels read.

    Built once by :func:`make_plan`; a local sweep runs every pack in one
    parallel call, a cluster (:mod:`fastsoftmax.sweep.cluster`) runs each pack as a
    task on :meth:`pack_plan`'s slice of it.  The per-group and per-configuration
    settings are stacked arrays with named rows (G_INT, G_RATE, C_INT above), read
    by name through the properties (``plan.g_lr`` is ``plan.g_rate[G_LR]``, a view).
    """

    flat_configs: list  # (group index, Config): groups by group_key, each sorted by epochs
    n_features: int
    n_classes: int
    dtype: np.dtype
    epochs: int  # E, the largest epoch count
    g_int: np.ndarray  # (len(G_INT), G) int64
    g_rate: np.ndarray  # (len(G_RATE), G) of the model dtype
    g_limit: np.ndarray  # (G,) float64, the largest loss accepted (divergence)
    g_settings: np.ndarray  # (G, 4) float64, the optimiser's settings
    weights: np.ndarray  # every group's model, packed (kernels.layout)
    g_size: np.ndarray  # (G,) length of each group's packed model in weights
    slots: np.ndarray  # (2, len(weights)), or (2, 0) when every group is plain SGD
    c_int: np.ndarray  # (len(C_INT), C) int64
    c_size: list  # length of each configuration's snapshot
    g_cost: list
    packs: list  # of lists of group indices

    g_batch, g_hidden, g_epochs, g_off, g_opt = (_row("g_int", i) for i in range(len(G_INT)))
    g_lr, g_alpha = (_row("g_rate", i) for i in range(len(G_RATE)))
    c_group, c_epochs, c_off = (_row("c_int", i) for i in range(len(C_INT)))

    def __setstate__(self, state):
        self.__dict__.update(writable(state))

    def outputs(self) -> "Outputs":
        return Outputs.empty(self.g_int.shape[1], self.epochs)

    def snapshots(self) -> np.ndarray:
        """A flat array for every configuration's model, copied in as it is reached."""
        return np.zeros(int(sum(self.c_size)), self.dtype)

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
        g_int = self.g_int[:, members]
        g_int[G_OFF] = kernels.offsets(self.g_size[members])
        slots = self.slots if self.slots.shape[1] == 0 else np.stack([part(r) for r in self.slots])
        c_size = [self.c_size[ci] for ci in cis]
        flat_configs = [(renumber[self.flat_configs[ci][0]], self.flat_configs[ci][1])
                        for ci in cis]
        return Plan(
            flat_configs=flat_configs, n_features=self.n_features, n_classes=self.n_classes,
            dtype=self.dtype, epochs=int(self.g_epochs[members].max()), g_int=g_int,
            g_rate=self.g_rate[:, members], g_limit=self.g_limit[members],
            g_settings=self.g_settings[members], weights=part(self.weights),
            g_size=self.g_size[members], slots=slots,
            c_int=_stacked(flat_configs, c_size), c_size=c_size,
            g_cost=[self.g_cost[g] for g in members], packs=[list(range(len(members)))])


def _stacked(flat_configs: list, c_size: list) -> np.ndarray:
    """c_int of configurations ``flat_configs`` with snapshots of ``c_size``."""
    return np.array([[gi for gi, _ in flat_configs], [c.epochs for _, c in flat_configs],
                     kernels.offsets(c_size)], np.int64).reshape(len(C_INT), -1)


@dataclass
class RunData:
    """What the packs of a plan read: the rows of X (N, D) and X_val, uint8 pixels or
    floats of the model dtype, as the kernels take them with their table
    (kernels.data_rows), y, y_val (int64) and the minibatch orders (E, N) int64.  A
    cluster scatters it to each worker once."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    table: np.ndarray
    orders: np.ndarray

    @classmethod
    def of(cls, plan: "Plan", X, y, X_val, y_val, seed: int) -> "RunData":
        if X_val.dtype != X.dtype:  # one table serves both
            raise TypeError(f"validation data of {X_val.dtype} for data of {X.dtype}")
        rows, table = kernels.data_rows(X, plan.dtype)
        return cls(rows, y, kernels.data_rows(X_val, plan.dtype)[0], y_val, table,
                   minibatch_orders(X.shape[0], plan.epochs, seed))

    def __setstate__(self, state):  # once per worker: see writable
        self.__dict__.update(writable(state))


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

    objective = property(lambda self: self.curves[OBJECTIVE])
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
    weights, g_off, g_hidden = kernels.pack(models)
    g_size = np.diff(g_off, append=weights.size)
    flat_configs = [(gi, c) for gi, grp in enumerate(groups) for c in grp]
    c_size = [int(g_size[gi]) for gi, _ in flat_configs]
    g_cost = [cost(c, N) for c in heads]
    packs = pack_groups([(c.batch_size, c.epochs) for c in heads], g_cost, pack_size,
                        [size * dtype.itemsize for size in g_size], PACK_BYTES)
    optimizers = [make_optimizer(c.optimizer) for c in heads]
    g_opt, g_settings = kernels.settings_of(optimizers)
    slots = kernels.pack_slots(models, g_off, [init_state(o, m)
                                               for o, m in zip(optimizers, models)])
    g_int = np.empty((len(G_INT), len(heads)), np.int64)
    g_int[G_BATCH] = [c.batch_size for c in heads]
    g_int[G_HIDDEN], g_int[G_EPOCHS] = g_hidden, [c.epochs for c in heads]
    g_int[G_OFF], g_int[G_OPT] = g_off, g_opt
    g_rate = np.empty((len(G_RATE), len(heads)), dtype)
    g_rate[G_LR], g_rate[G_ALPHA] = [c.learning_rate for c in heads], [c.alpha for c in heads]
    return Plan(
        flat_configs=flat_configs, n_features=D, n_classes=K, dtype=dtype,
        epochs=max(c.epochs for c in configs), g_int=g_int, g_rate=g_rate,
        g_limit=np.array([reference.divergence_limit(inits[c.hidden_size], c.alpha, K)
                          for c in heads]),
        g_settings=g_settings, weights=weights, g_size=g_size, slots=slots,
        c_int=_stacked(flat_configs, c_size), c_size=c_size, g_cost=g_cost, packs=packs)

