"""The default 72-configuration grid written in JAX, as a JAX user would: a whole-process peer
for ``python -m fastsoftmax.sweep``.

    python bench/jax_grid.py [--part K/N]

The same split (48,000 / 12,000, seed 0), initial weights and per-epoch minibatch
orders as the sweep.  Each (batch size, hidden size) group vmaps the single-model benchmark's
jitted epoch (``peers.jax_epoch``: lax.scan over the minibatches, gathered inside from
the device-resident data, the last smaller one after) over its 4 (learning rate, alpha) configurations, trains 20
epochs and evaluates the validation set after epochs 5, 10 and 20: 6 groups, 72
configurations.  ``--part K/N`` runs the groups K, K+N, ... only, so N processes
pinned one per core share the grid.  Prints one JSON line: the best configuration
by validation accuracy, the count trained, and the process's wall time from start.

``--validate every`` records what fastsoftmax's sweep records for its learning curves:
after every epoch the validation cross-entropy and accuracy, and the epoch's mean
training loss (jax.value_and_grad in the scan, the loss from the step's own forward
pass).  The default, ``grid``, validates only at the grid's epoch counts: the
comparison as issue #10 set it, which spares JAX 17 of the sweep's 20 validation
passes per group (12,000 images each, an eighth of an epoch's arithmetic).
"""

from __future__ import annotations

import argparse
import json
import time

START = time.perf_counter()

import numpy as np  # noqa: E402

import fastsoftmax as fs  # noqa: E402
from fastsoftmax.sweep import grid  # noqa: E402
from fastsoftmax.data import train_val_split  # noqa: E402
from peers import jax_epoch, jax_step  # noqa: E402  (bench/ is this script's folder)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="K/N: run every N-th group from the K-th")
    ap.add_argument("--validate", choices=("grid", "every"), default="grid",
                    help="validate at the grid's epoch counts (default) or after every "
                         "epoch, with the training loss, as the sweep's histories")
    args = ap.parse_args(argv)
    k, n = (int(v) for v in args.part.split("/"))
    every = args.validate == "every"

    jax, jnp, step = jax_step(with_loss=every)

    ds = fs.load_fashion_mnist(download=False)
    tr, va = train_val_split(len(ds.train_labels), 0.2, 0)
    X = jnp.asarray(ds.train_images[tr] / np.float32(255), jnp.float32)
    y = jnp.asarray(ds.train_labels[tr])
    Xv = jnp.asarray(ds.train_images[va] / np.float32(255), jnp.float32)
    yv = jnp.asarray(ds.train_labels[va])
    N = X.shape[0]
    axes = grid.DEFAULT
    E = max(axes["epochs"])
    orders = fs.minibatch_orders(N, E, 0)

    def make_epoch(B):  # vmapped over the (lr, alpha) settings, the data shared
        return jax.jit(jax.vmap(jax_epoch(jax, step, N, B, with_loss=every),
                                in_axes=(0, 0, 0, None, None, None)))

    @jax.jit
    @jax.vmap
    def evaluate(params):  # (validation accuracy, validation cross-entropy)
        W1, b1, W2, b2 = params
        z = jax.nn.relu(Xv @ W1 + b1) @ W2 + b2
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), yv[:, None], axis=1))
        return jnp.mean(jnp.argmax(z, axis=1) == yv), ce

    settings = [(lr, a) for lr in axes["learning_rate"] for a in axes["alpha"]]
    lrs = jnp.asarray([lr for lr, _ in settings], jnp.float32)
    alphas = jnp.asarray([a for _, a in settings], jnp.float32)
    # hidden sizes outermost, so that --part 0/2 and 1/2 each get both sizes: equal work
    groups = [(b, h) for h in axes["hidden_size"] for b in axes["batch_size"]][k::n]
    best, trained, curves = (-1.0, None), 0, []
    for B, H in groups:
        one = fs.init_params(784, H, 10, seed=0, dtype=np.float32)
        params = tuple(jnp.asarray(np.stack([a] * len(settings))) for a in one)
        epoch = make_epoch(B)
        for e in range(E):
            out = epoch(params, lrs, alphas, X, y, jnp.asarray(orders[e]))
            if every:
                params, train_loss = out
                acc, ce = (np.asarray(v) for v in evaluate(params))
                curves.append((np.asarray(train_loss), ce, acc))
            else:
                params = out
            if e + 1 in axes["epochs"]:
                acc = acc if every else np.asarray(evaluate(params)[0])
                trained += len(settings)
                for (lr, a), v in zip(settings, acc):
                    if v > best[0]:
                        best = (float(v), dict(batch_size=B, learning_rate=lr, epochs=e + 1,
                                               alpha=a, hidden_size=H))
    print(json.dumps({"best_val_accuracy": best[0], "best": best[1], "configs": trained,
                      "groups": len(groups), "validate": args.validate,
                      "epochs_recorded": len(curves) * len(settings),
                      "wall_seconds": time.perf_counter() - START}))


if __name__ == "__main__":
    main()
