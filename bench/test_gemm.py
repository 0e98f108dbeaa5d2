"""The machine's own limits: float32 GEMM GFLOP/s on 1 and 2 threads (NumPy's BLAS),
and one core's multiply-add peak, measured with fastsoftmax's register tile on operands
that stay in L1 (no memory traffic: the most FLOP/s this core gives)."""

import numpy as np
import pytest

from fastsoftmax._jit import jit
from fastsoftmax._tile import tile2
from threadpoolctl import threadpool_limits

N = 4096


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm(benchmark, threads):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    benchmark.group = "gemm 4096 float32"
    with threadpool_limits(threads):
        a @ b  # warm the BLAS threads
        benchmark.pedantic(np.matmul, args=(a, b), rounds=3, iterations=1)
    benchmark.extra_info.update(threads=threads,
                                gflops=2 * N**3 / benchmark.stats.stats.min / 1e9)


@jit(cache=False)
def _tile_in_l1(a, b, out, k, reps):
    one = a.dtype.type(1)
    for _ in range(reps):
        tile2(a, 0, k, 1, b, 0, 16, k, out, 0, 16, one, one)


def test_core_peak(benchmark, one_thread):
    """6 x 16 float32 accumulators, k = 256: 12 KiB of operands, 12 FMAs per 8 loads."""
    k, reps = 256, 20_000
    rng = np.random.default_rng(0)
    a = rng.random(6 * k, dtype=np.float32)
    b = rng.random(k * 16, dtype=np.float32)
    out = np.zeros(6 * 16, np.float32)
    _tile_in_l1(a, b, out, k, 1)  # compile
    benchmark.group = "core peak float32"
    benchmark.pedantic(_tile_in_l1, args=(a, b, out, k, reps), rounds=5, iterations=1)
    benchmark.extra_info.update(gflops=2 * 6 * 16 * k * reps / benchmark.stats.stats.min / 1e9)
