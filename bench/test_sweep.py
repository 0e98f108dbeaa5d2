"""Grid-search throughput: the default 72-configuration sweep on the real data.

fastsoftmax runs end to end through its command line (load, split 48,000 /
12,000, train, validate, pick, test) on 1 and 2 threads, after a tiny sweep has
compiled (or loaded from the cache) the parallel kernel.  The NumPy reference
loops over the same configurations on the same split, one BLAS thread, and is
given the same epoch sharing (configurations that differ only in epochs train
once), so the ratio is not inflated by that trick.
"""

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastsoftmax as fs
from fastsoftmax import cli, reference
from fastsoftmax.sweep import grid
from fastsoftmax.checks import check_X
from fastsoftmax.data import train_val_split
from peers import forward_flops_per_sample, model_flops_per_sample

CONFIGS = grid.build_grid(**grid.DEFAULT)
N_TRAIN, N_VAL = 48000, 12000


def _epochs_trained():
    return sum(g[-1].epochs for g in grid.group_configs(CONFIGS))


def _model_gflop():
    """The model FLOPs the grid needs, in GFLOP: each group's epochs on the training images,
    and one validation pass at each epoch count the grid asks for (what the JAX grid
    computes; fastsoftmax validates after every epoch, for the histories, uncounted)."""
    total = 0
    for group in grid.group_configs(CONFIGS):
        H = group[-1].hidden_size
        total += group[-1].epochs * N_TRAIN * model_flops_per_sample(H)
        total += len(group) * N_VAL * forward_flops_per_sample(H)
    return total / 1e9


# "local:2": the same sweep as tasks on a Dask LocalCluster of 2 worker processes,
# started and stopped inside the timed run, as --scheduler local:2 does for a user.
@pytest.mark.parametrize("workers", [1, 2, "local:2"])
def test_sweep_fastsoftmax(benchmark, train_set, workers, capsys):
    cli.main(["--quiet", "--sample", "2", "--epochs", "1", "--limit", "2000"])  # compile
    capsys.readouterr()  # the warm-up's output is not the measured run's
    benchmark.group = "default sweep (72 configurations)"
    how = ["--scheduler", workers] if isinstance(workers, str) else ["--workers", str(workers)]
    code = benchmark.pedantic(cli.main, args=(["--quiet", "--json", *how],),
                              rounds=1, iterations=1)
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_configs"] == len(CONFIGS) and summary["n_train"] == N_TRAIN
    assert summary["n_val"] == N_VAL
    best = summary["best"]
    benchmark.extra_info.update(
        workers=workers, epochs_trained=_epochs_trained(), model_gflop=_model_gflop(),
        test_accuracy=summary["test_accuracy"], test_loss=summary["test_loss"],
        best={k: best[k] for k in grid.AXES}, best_val_accuracy=best["val_accuracy"])


def test_sweep_numpy_reference(benchmark, train_set):
    X_all, y_all = train_set
    tr, va = train_val_split(len(y_all), 0.2, 0)
    X, y = check_X(X_all[tr], np.dtype(np.float32)), y_all[tr]
    Xv, yv = check_X(X_all[va], np.dtype(np.float32)), y_all[va]

    def loop():
        best = (-1.0, None)
        for group in grid.group_configs(CONFIGS):
            head = group[-1]
            params = fs.init_params(X.shape[1], head.hidden_size, 10, seed=0, dtype=X.dtype)
            orders = fs.minibatch_orders(len(X), head.epochs, 0)
            wanted = {c.epochs: c for c in group}
            for e in range(head.epochs):
                params, _, diverged = reference.train_epoch(
                    params, X, y, orders[e], head.batch_size, head.learning_rate, head.alpha)
                if diverged:
                    break
                if e + 1 in wanted:
                    acc = reference.evaluate(params, Xv, yv, 0.0)[1]
                    best = max(best, (acc, wanted[e + 1]), key=lambda t: t[0])
        return best

    benchmark.group = "default sweep (72 configurations)"
    with threadpool_limits(1):
        acc, config = benchmark.pedantic(loop, rounds=1, iterations=1)
    benchmark.extra_info.update(workers=1, epochs_trained=_epochs_trained(),
                                best=f"{config} val acc {acc:.4f}")
