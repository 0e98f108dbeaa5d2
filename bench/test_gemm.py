"""The machine's own limit: float32 GEMM GFLOP/s on 1 and 2 threads (NumPy's BLAS)."""

import numpy as np
import pytest
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
