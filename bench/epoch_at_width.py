"""One fastsoftmax epoch cell timed in this process, at the width FASTSOFTMAX_SIMD names.

    FASTSOFTMAX_SIMD=avx2 python bench/epoch_at_width.py H B ROUNDS

Prints one JSON line: the width the kernels were built for, the best epoch's
seconds over ROUNDS timed epochs, and the first (compiling) epoch's seconds.
test_epoch.py runs it on AVX-512 hosts so one bench run holds both code paths;
the cell is set up as test_epoch's fastsoftmax peer is (same data, model,
orders), on one pinned core, one thread.
"""

import json
import os
import sys
import time

from threadpoolctl import threadpool_limits

from fastsoftmax import simd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Fastsoftmax, one_pinned_core, real_train_set  # noqa: E402


def main(H: int, B: int, rounds: int) -> dict:
    one_pinned_core()
    X, y = real_train_set()
    with threadpool_limits(1):
        t0 = time.perf_counter()
        cell = Fastsoftmax(X, y, H, B)
        cell.epoch()
        first = time.perf_counter() - t0
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            cell.epoch()
            best = min(best, time.perf_counter() - t)
    return {"width": simd.WIDTH, "seconds": best, "first_epoch_s": first, "samples": len(X)}


if __name__ == "__main__":
    print(json.dumps(main(*(int(v) for v in sys.argv[1:4]))))
