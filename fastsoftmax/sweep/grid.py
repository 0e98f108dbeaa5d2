"""Hyperparameter grids: building, sampling, and grouping for shared training.

A configuration is one point of the grid.  Configurations that differ only
in their epoch count form a *group*: the group trains once to its largest
count and records the model at each smaller one, which gives exactly what
training each configuration separately would (the minibatch order of epoch e
does not depend on the total number of epochs).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..checks import check_nonnegative_float, check_positive_float, check_positive_int
from ..optimizers import AXIS_NAMES

AXES = ("batch_size", "learning_rate", "epochs", "alpha", "hidden_size", "optimizer")


@dataclass(frozen=True, order=True)
class Config:
    """One point of a grid.  optimizer is a grid axis name of
    :mod:`fastsoftmax.optimizers` ("sgd", "momentum", "nesterov", "adam"),
    each with its default settings."""

    batch_size: int
    learning_rate: float
    epochs: int
    alpha: float
    hidden_size: int
    optimizer: str = "sgd"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """The grid point a saved dict names (a record, best.json's "best"; other keys
        are ignored).  Folders from before the optimizer axis name none: they trained
        plain SGD, the field's default."""
        return cls(int(d["batch_size"]), float(d["learning_rate"]), int(d["epochs"]),
                   float(d["alpha"]), int(d["hidden_size"]),
                   str(d.get("optimizer", cls.optimizer)))

    @property
    def group_key(self) -> tuple:
        """Everything but the epoch count: configurations that share training."""
        return (self.batch_size, self.learning_rate, self.alpha, self.hidden_size,
                self.optimizer)


# The original study's grid: 3 x 2 x 3 x 2 x 2 = 72 configurations, plain SGD.
DEFAULT = dict(batch_size=(32, 64, 128), learning_rate=(1e-3, 1e-4), epochs=(5, 10, 20),
               alpha=(1e-3, 1.0), hidden_size=(20, 40), optimizer=("sgd",))
# Larger learning rates, more hidden units and epochs, weak L2.
# 2 x 2 x 2 x 2 x 2 = 32 configurations in 16 groups.
WIDE = dict(batch_size=(32, 64), learning_rate=(0.05, 0.1), epochs=(20, 40),
            alpha=(1e-5, 1e-4), hidden_size=(128, 256), optimizer=("sgd",))
# Adam on 512 hidden units: the presets' best model, from 2 training runs of 40 epochs,
# one per core (README, "The grid search").
ADAM = dict(batch_size=(128,), learning_rate=(5e-4,), epochs=(20, 30, 40),
            alpha=(1e-5, 5e-5), hidden_size=(512,), optimizer=("adam",))
PRESETS = {"default": DEFAULT, "wide": WIDE, "adam": ADAM}


def _check_axis_optimizer(name) -> str:
    """A grid's optimizer: a name of AXIS_NAMES, each rule with its default settings."""
    if name not in AXIS_NAMES:
        raise ValueError(f"optimizer must be one of {', '.join(AXIS_NAMES)}; got {name!r}")
    return name


_CHECKS = {
    "batch_size": lambda v: check_positive_int(v, "batch size"),
    "learning_rate": lambda v: check_positive_float(v, "learning rate"),
    "epochs": lambda v: check_positive_int(v, "epochs"),
    "alpha": lambda v: check_nonnegative_float(v, "alpha"),
    "hidden_size": lambda v: check_positive_int(v, "hidden size"),
    "optimizer": _check_axis_optimizer,
}


def build_grid(**axes) -> list[Config]:
    """Every combination of the given axis values (duplicates removed), sorted.

    Each keyword of :data:`AXES` takes a non-empty sequence (optimizer
    defaults to plain SGD alone); values are validated with a ValueError
    naming the axis.
    """
    unknown = set(axes) - set(AXES)
    if unknown:
        raise ValueError(f"unknown grid axes {sorted(unknown)}; expected {AXES}")
    axes.setdefault("optimizer", ("sgd",))
    values = []
    for name in AXES:
        vals = axes.get(name)
        if vals is None or len(vals) == 0:
            raise ValueError(f"{name}: needs at least one value")
        values.append(sorted({_CHECKS[name](v) for v in vals}))
    return [Config(*combo) for combo in itertools.product(*values)]


def sample_grid(grid: list[Config], n: int, seed: int) -> list[Config]:
    """``n`` distinct configurations drawn at random (seeded), sorted."""
    n = check_positive_int(n, "sample")
    if n > len(grid):
        raise ValueError(f"sample: {n} is larger than the grid ({len(grid)} configurations)")
    picks = np.random.default_rng(seed).choice(len(grid), size=n, replace=False)
    return sorted(grid[i] for i in picks)


def group_configs(configs: list[Config]) -> list[list[Config]]:
    """Configurations grouped by :attr:`Config.group_key`, each group sorted by epochs."""
    groups: dict[tuple, list[Config]] = {}
    for c in configs:
        groups.setdefault(c.group_key, []).append(c)
    return [sorted(g, key=lambda c: c.epochs) for _, g in sorted(groups.items())]


def pack_groups(keys, costs, max_pack: int, sizes=None, max_size: float = float("inf")
                ) -> list[list[int]]:
    """Split jobs into packs that can train together.

    Jobs with equal keys (for the sweep: batch size and epoch count, which
    fix the minibatch sequence) may share a pack of at most ``max_pack`` jobs
    whose ``sizes`` (for the sweep: bytes of weights) add up to at most
    ``max_size`` (a job larger than that gets a pack of its own).  Each class
    is cut into as few packs as the limits allow, balanced by cost (costliest
    first, each to the lightest pack with room).  Returns packs of job
    indices, in the order their classes first appear, each pack ascending.
    """
    max_pack = check_positive_int(max_pack, "pack size")
    sizes = [0] * len(keys) if sizes is None else list(sizes)
    classes: dict = {}
    for j, key in enumerate(keys):
        classes.setdefault(key, []).append(j)

    def room(pack, j):
        return len(pack) < max_pack and (not pack or sum(sizes[i] for i in pack) + sizes[j]
                                         <= max_size)

    packs = []
    for members in classes.values():
        n = -(-len(members) // max_pack)
        if max_size < float("inf"):
            n = max(n, math.ceil(sum(sizes[j] for j in members) / max_size))
        packs.extend(sorted(p) for p in _balance(members, costs, n, room) if p)
    return packs


def _balance(jobs, costs, n_bins: int, room=None) -> list[list[int]]:
    """Jobs into bins, costliest first, each to the least-loaded bin that has
    ``room(bin, job)`` (ties to the lowest bin); a job no bin has room for
    opens one more."""
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    loads = [0.0] * n_bins
    for job in sorted(jobs, key=lambda j: (-costs[j], j)):
        fits = [k for k in range(len(bins)) if room is None or room(bins[k], job)]
        if not fits:
            bins.append([])
            loads.append(0.0)
            fits = [len(bins) - 1]
        k = min(fits, key=lambda k: (loads[k], k))
        bins[k].append(job)
        loads[k] += costs[job]
    return bins


def assign_workers(costs, n_workers: int) -> list[list[int]]:
    """Greedy longest-processing-time assignment of jobs to workers.

    Jobs are taken costliest first and each goes to the least-loaded worker,
    which keeps every core busy to the end (within 4/3 of optimal).  Ties go
    to the lowest worker, so the assignment is deterministic.
    """
    return _balance(range(len(costs)), costs, n_workers)
