"""One epoch on the real training set, float32, one thread, every peer side by side.

Timed rounds exclude compilation: the first epoch (which compiles, for numba,
JAX and torch's first-call setup) runs before timing and is reported on its
own as ``first_epoch_s`` in the benchmark's extra_info.
"""

import time

import pytest

from peers import PEERS, FastsoftmaxPack, JaxVmap, Missing, make, model_flops_per_sample

HIDDEN = (20, 40)
BATCH = (32, 64, 128)
ROUNDS = 5


def _run(benchmark, build, n_samples, H, configs=1):
    try:
        t0 = time.perf_counter()
        impl = build()
    except Missing as exc:
        pytest.skip(str(exc))
    impl.epoch()  # compile / warm up, outside the timed rounds
    benchmark.extra_info["first_epoch_s"] = time.perf_counter() - t0
    benchmark.pedantic(impl.epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    best = benchmark.stats.stats.min
    rate = n_samples * configs / best
    benchmark.extra_info.update(samples_per_s=rate, configs=configs, H=H,
                                model_gflops=rate * model_flops_per_sample(H) / 1e9)


@pytest.mark.parametrize("B", BATCH)
@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("peer", list(PEERS))
def test_epoch(benchmark, train_set, one_thread, peer, H, B):
    X, y = train_set
    benchmark.group = f"epoch H={H} B={B}"
    _run(benchmark, lambda: make(peer, X, y, H, B), len(X), H)


@pytest.mark.parametrize("B", BATCH)
@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("name, cls", [("jax_vmap", JaxVmap), ("fastsoftmax_pack", FastsoftmaxPack)])
def test_epoch_four_configs(benchmark, train_set, one_thread, name, cls, H, B):
    """The grid-search idiom: 4 configurations per epoch (aggregate samples/s), JAX's vmap
    against fastsoftmax's packs."""
    X, y = train_set
    benchmark.group = f"epoch H={H} B={B}"
    _run(benchmark, lambda: cls(X, y, H, B, n_configs=4), len(X), H, configs=4)
