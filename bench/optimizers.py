"""One Fashion-MNIST run per optimiser: test accuracy and seconds per epoch against plain SGD.

``fs.train`` on the 60,000 training images (uint8, as the loader gives them), 100 hidden
units, minibatches of 64, alpha 1e-4, seed 0, float32, each optimiser at a learning rate
that suits it; the test set is evaluated once, at the end.  Epoch times are the median of
``History.seconds`` (no validation set, so the epoch alone) without the first epoch, which
compiles or loads numba's cache.  One BLAS thread; the kernels are serial.

    python bench/optimizers.py [--epochs 20] [--json PATH]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from threadpoolctl import threadpool_limits

import fastsoftmax as fs

RUNS = [("sgd", dict(optimizer="sgd", learning_rate=0.1)),
        ("momentum", dict(optimizer="momentum", learning_rate=0.01)),
        ("nesterov", dict(optimizer="momentum", nesterov=True, learning_rate=0.01)),
        ("adam", dict(optimizer="adam", learning_rate=1e-3))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    data = fs.load_fashion_mnist()
    X, y = data.train_images, data.train_labels
    Xt, yt = data.test_images, data.test_labels
    rows = []
    with threadpool_limits(limits=1):
        for name, kw in RUNS:
            result = fs.train(X, y, hidden_size=100, batch_size=64, epochs=args.epochs,
                              alpha=1e-4, seed=0, **kw)
            _, acc = fs.evaluate(result.params, Xt, yt)
            rows.append(dict(optimizer=name, **{k: v for k, v in kw.items() if k != "optimizer"},
                             test_accuracy=acc, diverged=result.diverged,
                             epoch_seconds=float(np.median(result.history.seconds[1:]))))
    sgd = rows[0]["epoch_seconds"]
    print(f"| optimizer | learning rate | test accuracy after {args.epochs} epochs "
          "| s per epoch | x plain SGD's time |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['learning_rate']:g} | {r['test_accuracy']:.4f} "
              f"| {r['epoch_seconds']:.3f} | {r['epoch_seconds'] / sgd:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
