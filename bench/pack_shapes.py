"""How close do packs come to one wide model?  Two measurements on one pinned core, float32.

1. The whole epoch.  A pack of 4 models of H hidden units (as the sweep trains them, each
   minibatch gathered once, their W1 side by side) against ONE model of 4H units.  The
   single model is what a pack laid side by side would be at best: its two big products run
   once over 4H units, as the pack's now do, and it also does one softmax and one 10-class
   product where the pack does four.  Its time over the pack's bounds what is left to save.
   (Written before packs were laid side by side, when it measured what that could gain.)
2. The two big products alone (the forward ``Xb W1`` and the update ``W1 += Xb^T dA``,
   fastsoftmax's ``_tiles`` on the training step's shapes): 4 models of Hp units one after
   the other, against one product over 4 Hp units, in GFLOP/s.

    python bench/pack_shapes.py [--repeats 2] [--json PATH]

Best of 5 epochs (or 5 timed batches of product calls) per figure; the pairs alternate,
``--repeats`` times, since this machine's timings drift by 20% between minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from fastsoftmax import simd
from fastsoftmax.kernels.jit import jit
from fastsoftmax.kernels import pad_features, pad_hidden, pad_samples
from fastsoftmax.kernels.layout import UNIT
from fastsoftmax.kernels.products import _tiles
from fastsoftmax.kernels.steps import FEATURE_BLOCK
from fastsoftmax.host.machine import cpu_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Fastsoftmax, FastsoftmaxPack, one_pinned_core, real_train_set  # noqa: E402

CELLS = [(20, 32), (20, 128), (40, 32), (40, 128)]
PACK = 4


def _best(fn, rounds=5) -> float:
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@jit(cache=False)
def _forward_products(Xb, Ws, out, npad, reps):
    Dp = Xb.shape[1]
    # one coefficient per column, as the kernels pass them (steps._overwrite_coefs)
    zeros_c, ones_c = np.zeros(out.shape[1], Xb.dtype), np.ones(out.shape[1], Xb.dtype)
    Xf, of = Xb.ravel(), out.ravel()
    for _ in range(reps):
        for m in range(len(Ws)):
            W = Ws[m]
            Hp = W.shape[1]
            Wf = W.ravel()
            for f in range(0, Dp, FEATURE_BLOCK):  # as steps._input_product blocks it
                beta = zeros_c if f == 0 else ones_c
                _tiles(Xf[f:], Dp, UNIT, npad, Wf[f * Hp:], Hp, min(FEATURE_BLOCK, Dp - f), of,
                       Hp, Hp, beta, ones_c)


@jit(cache=False)
def _update_products(Xb, dAs, Ws, npad, reps):
    Dp = Xb.shape[1]
    width = 0
    for m in range(len(Ws)):
        width = max(width, Ws[m].shape[1])
    one, step = np.ones(width, Xb.dtype), np.full(width, -1e-9, Xb.dtype)
    for _ in range(reps):
        for m in range(len(Ws)):
            W = Ws[m]
            Hp = W.shape[1]
            _tiles(Xb.ravel(), UNIT, Dp, Dp, dAs[m].ravel(), Hp, npad, W.ravel(), Hp, Hp, one, step)


def products(H: int, B: int, rng) -> dict:
    """GFLOP/s of the forward and update products: PACK narrow ones against one wide one."""
    Hp, npad, Dp = pad_hidden(H), pad_samples(B), pad_features(784)
    Xb = rng.random((npad, Dp), dtype=np.float32)
    reps = max(1, 60_000 // B // 2)  # about half an epoch's steps per timed call
    out = {}
    for name, widths in (("narrow", [Hp] * PACK), ("wide", [PACK * Hp])):
        Ws = numba.typed.List([rng.random((Dp, w), dtype=np.float32) for w in widths])
        dAs = numba.typed.List([rng.random((npad, w), dtype=np.float32) for w in widths])
        Hd = np.empty((npad, max(widths)), np.float32)
        flops = 2 * npad * Dp * sum(widths) * reps
        out[name] = {
            "forward_gflops": flops / _best(lambda: _forward_products(Xb, Ws, Hd, npad, reps)) / 1e9,
            "update_gflops": flops / _best(lambda: _update_products(Xb, dAs, Ws, npad, reps)) / 1e9}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    one_pinned_core()
    X, y = real_train_set()
    rng = np.random.default_rng(0)
    rows = []
    with threadpool_limits(1):
        for H, B in CELLS:
            for r in range(args.repeats):
                pack = _best(FastsoftmaxPack(X, y, H, B, n_configs=PACK).epoch)
                wide = _best(Fastsoftmax(X, y, PACK * H, B).epoch)
                prod = products(H, B, rng)
                rows.append({"H": H, "B": B, "repeat": r, "pack_s": pack, "wide_model_s": wide,
                             "products": prod})
                print(f"H={H} B={B}: pack of {PACK} {pack:.3f} s, one model of {PACK * H} "
                      f"{wide:.3f} s ({wide / pack:.2f} of the pack); products narrow/wide "
                      f"GFLOP/s: forward {prod['narrow']['forward_gflops']:.0f}/"
                      f"{prod['wide']['forward_gflops']:.0f}, update "
                      f"{prod['narrow']['update_gflops']:.0f}/{prod['wide']['update_gflops']:.0f}",
                      flush=True)
    model, flags = cpu_model()
    print(f"CPU: {model} ({', '.join(flags)}); kernels built for {simd.WIDTH}; one pinned core")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": model, "simd": list(flags), "kernels_width": simd.WIDTH,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
