"""Two or more checkouts' epoch kernels, alternating in one process on one pinned core.

This machine's speed wanders by 20-30% over minutes, so two versions timed a minute apart
cannot be compared to a few percent.  Here every round trains one epoch with each checkout,
back to back, in an order that flips every round, and the figure is the median over rounds
of each checkout's epoch time over the first's: both sides of a ratio see the same seconds.

    python bench/ab_epochs.py BASE OTHER [MORE ...] [--cells 40x128,20x32] [--rounds 8]
                              [--optimizer adam]

BASE, OTHER, ...: roots of fastsoftmax checkouts (``git worktree add`` or clones). Each cell
H x B trains a pack of four plain-SGD models of H hidden units (the default grid's learning
rates and alphas; ``--optimizer`` names another rule for all four, which runs the epoch
kernel with the other rules) on the sweep's 48,000 training images as loaded (uint8),
minibatch B, a fresh order each round. Every checkout starts each round from the same
weights, so the script also reports whether they trained the same bits. The compiled code
goes to a fresh temporary ``NUMBA_CACHE_DIR`` unless one is set (round 0, untimed,
compiles): the checkouts are loaded under other module names, and their code cached in their
own trees would name modules that a normal import cannot find.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import time

# numba reads it when first imported, which the checkouts do
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="ab_epochs-"))

import numpy as np  # noqa: E402

PACK_LR = [1e-3, 1e-4, 1e-3, 1e-4]
PACK_ALPHA = [1e-3, 1e-3, 1.0, 1.0]


def load(index: int, root: str):
    """fastsoftmax from ``root`` as module fs_<index>, and its kernels."""
    init = os.path.join(root, "fastsoftmax", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"ab_epochs.py: no fastsoftmax package under {root!r}")
    name = f"fs_{index}"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module, importlib.import_module(name + ".kernels")


def cell(text: str) -> tuple[int, int]:
    try:
        H, B = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a cell is HxB, like 40x128, not {text!r}") from None
    if H < 1 or B < 1:
        raise argparse.ArgumentTypeError(f"H and B must be positive in {text!r}")
    return H, B


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="fastsoftmax checkouts; the first is the base")
    ap.add_argument("--cells", type=lambda s: [cell(c) for c in s.split(",")],
                    default=[(40, 128), (40, 32), (20, 128), (20, 32)])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--optimizer", default="sgd", help="sgd (default), momentum, nesterov, adam")
    args = ap.parse_args(argv)
    if len(args.roots) < 2:
        ap.error("give at least two checkouts")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import one_pinned_core
    from threadpoolctl import threadpool_limits
    one_pinned_core()
    threadpool_limits(1)
    mods = [load(i, root) for i, root in enumerate(args.roots)]
    fs = mods[0][0]
    data = fs.load_fashion_mnist()
    X, y = data.train_images[:48000], data.train_labels[:48000].astype(np.int64)
    print(f"base {args.roots[0]}; " + "; ".join(f"x{i} {r}" for i, r in
                                              enumerate(args.roots[1:], 1)))
    for H, B in args.cells:
        start = [fs.init_params(X.shape[1], H, 10, seed=s, dtype=np.float32) for s in range(4)]
        orders = fs.minibatch_orders(len(X), args.rounds + 1, 0)
        rule = fs.optimizers.make_optimizer(args.optimizer)
        times = [[] for _ in mods]
        same = True
        for r in range(args.rounds + 1):  # round 0 compiles
            turn = list(range(len(mods)))
            if r % 2:
                turn.reverse()
            trained = {}
            for i in turn:
                kernels = mods[i][1]
                t = time.perf_counter()
                params = kernels.train_epoch_many(start, X, y, orders[r], B, PACK_LR, PACK_ALPHA,
                                                  optimizers=[rule] * 4)[0]
                if r:
                    times[i].append(time.perf_counter() - t)
                trained[i] = params
            same = same and all(np.array_equal(a, b)
                                for i in trained for pa, pb in zip(trained[0], trained[i])
                                for a, b in zip(pa, pb))
        base = np.array(times[0])
        ratios = " ".join(f"x{i} {np.median(np.array(t) / base):.3f}"
                          for i, t in enumerate(times[1:], 1))
        print(f"H={H} B={B}: best epoch " + " ".join(f"{min(t):.4f}" for t in times) +
              f" s; median per-round time over base: {ratios}; same bits: {same}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
