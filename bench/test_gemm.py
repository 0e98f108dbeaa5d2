"""The machine's own limits: float32 GEMM GFLOP/s on 1 and 2 threads (NumPy's BLAS),
and one core's multiply-add peak, measured with fastsoftmax's register tile on operands
that stay in L1 (no memory traffic).  The report takes the better of the 1-thread GEMM
and the tile as the core's peak, so that a BLAS faster than our tile (an AVX-512 kernel
on a host that has it) is the bar, not our own code.

The tile is measured at each width this process's target can run: the 32-byte
AVX2 tile everywhere, and where fastsoftmax built for AVX-512 the 64-byte tile
its kernels use for the bulk (12 rows x 2 vectors, 32 registers).

The GEMM runs in a fresh process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset:
OpenBLAS reads them once, as it loads, and this project's machines have been seen to
set them to an older core's kernel.  What threadpoolctl says of the BLAS it loaded
(library, version, the kernel's architecture) is recorded with the figure."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastsoftmax.kernels.jit import jit
from fastsoftmax import simd
from fastsoftmax.kernels._tile import tile2, zmm2_tall
from fastsoftmax.host.machine import cpu_model

N = 4096
ROUNDS = 3

_GEMM = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
n, threads, rounds = (int(v) for v in sys.argv[1:])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
with threadpool_limits(threads):
    a @ b  # warm the BLAS threads
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
blas = [{k: i.get(k) for k in ("internal_api", "version", "architecture", "filepath")}
        for i in threadpool_info() if i.get("user_api") == "blas"]
print(json.dumps({"seconds": best, "blas": blas}))
"""


def _gemm_in_a_clean_process(threads):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    run = subprocess.run([sys.executable, "-c", _GEMM, str(N), str(threads), str(ROUNDS)],
                         env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(run.stdout)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm(benchmark, threads):
    benchmark.group = "gemm 4096 float32"
    found = {}
    # The timed call is the whole subprocess (start-up included, so its stats are not the
    # GEMM's); the GEMM's own best time, measured inside it, gives gflops.
    benchmark.pedantic(lambda: found.update(_gemm_in_a_clean_process(threads)), rounds=1,
                       iterations=1)
    benchmark.extra_info.update(threads=threads, gemm_seconds=found["seconds"],
                                gflops=2 * N**3 / found["seconds"] / 1e9, blas=found["blas"],
                                openblas_env_unset=True)


@jit(cache=False)
def _narrow_tile_in_l1(a, b, out, k, reps):
    one = a.dtype.type(1)
    for _ in range(reps):
        tile2(a, 0, k, 1, b, 0, 16, k, out, 0, 16, one, one)


@jit(cache=False)
def _zmm_tile_in_l1(a, b, out, k, reps):
    one = a.dtype.type(1)
    for _ in range(reps):
        zmm2_tall(a, 0, k, 1, b, 0, 32, k, out, 0, 32, one, one)


# vector bytes -> (kernel, rows, float32 columns)
TILES = {32: (_narrow_tile_in_l1, 6, 16), 64: (_zmm_tile_in_l1, 12, 32)}


@pytest.mark.parametrize("vector_bytes", sorted(TILES))
def test_core_peak(benchmark, one_thread, vector_bytes):
    """rows x cols float32 accumulators, k = 256: 12 KiB (32 bytes) or 36 KiB (64 bytes) of
    operands, all in L1."""
    if vector_bytes > simd.VECTOR_BYTES:
        pytest.skip(f"fastsoftmax builds {simd.WIDTH} kernels here "
                    f"(CPU: {cpu_model()[0]}): no {vector_bytes}-byte tile to measure")
    kernel, rows, cols = TILES[vector_bytes]
    k, reps = 256, 20_000
    rng = np.random.default_rng(0)
    a = rng.random(rows * k, dtype=np.float32)
    b = rng.random(k * cols, dtype=np.float32)
    out = np.zeros(rows * cols, np.float32)
    kernel(a, b, out, k, 1)  # compile
    benchmark.group = "core peak float32"
    benchmark.pedantic(kernel, args=(a, b, out, k, reps), rounds=5, iterations=1)
    model, flags = cpu_model()
    benchmark.extra_info.update(
        gflops=2 * rows * cols * k * reps / benchmark.stats.stats.min / 1e9,
        vector_bytes=vector_bytes, rows=rows, cols=cols, kernels_width=simd.WIDTH, cpu=model,
        simd=list(flags))
