"""One epoch of the same model, written as each tool's users would write it.

Every implementation trains the network of fastsoftmax.reference (784 -> H ReLU
-> 10 softmax, mean cross-entropy + (alpha/2)(||W1||^2 + ||W2||^2), plain SGD)
from the same initial weights, one epoch per ``epoch()`` call, the last
smaller minibatch included.  Each pays what its users pay: every epoch takes
a fresh minibatch order (the next of ORDERS seeded permutations, the first
being fastsoftmax's order for the seed, so one epoch of each peer trains the
same model) and gathers its minibatches inside the timed epoch.  ``make(name, X, y, H, B)`` builds one; a peer that
is not installed raises ``Missing`` with the reason, which the benchmarks
report as a skip.
"""

from __future__ import annotations

import numpy as np

import fastsoftmax as fs
from fastsoftmax import kernels
from fastsoftmax.trainer import _Engine

LEARNING_RATE = 0.05
ALPHA = 1e-4
SEED = 0
ORDERS = 8  # distinct epoch orders, used in turn


def scaled(images, labels):
    """Images and labels as every peer sees them: float32 in [0, 1], int64 labels."""
    return (images / np.float32(255)).astype(np.float32), labels.astype(np.int64)


def one_pinned_core():
    """For scripts run outside pytest (whose conftest pins every thread): this process on
    one CPU, numba on one thread.  Linux pins; elsewhere only numba's setting applies."""
    import os

    import numba

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    numba.set_num_threads(1)


def real_train_set():
    """The real 60,000 training images, scaled (needs the dataset installed)."""
    data = fs.load_fashion_mnist(download=False)
    return scaled(data.train_images, data.train_labels)


class _Shuffled:
    """A fresh minibatch order per epoch, as each peer's users would draw one."""

    def _orders(self, n):
        self.orders = fs.minibatch_orders(n, ORDERS, SEED)
        self.epochs_run = 0

    def next_order(self):
        order = self.orders[self.epochs_run % ORDERS]
        self.epochs_run += 1
        return order


class Missing(Exception):
    """A peer library is not installed (the message says which and how)."""


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Missing(f"{module} is not installed ({extra}): {exc}") from None


def model_flops_per_sample(H: int) -> int:
    """Forward + backward FLOPs of one training sample (the issue's count)."""
    return 4 * 784 * H + 6 * 10 * H


def forward_flops_per_sample(H: int) -> int:
    """Forward FLOPs of one sample (an evaluation): the two layers' products."""
    return 2 * 784 * H + 2 * 10 * H


class Fastsoftmax(_Shuffled):
    """fastsoftmax's compiled epoch (numba) as fs.train runs it (its _Engine: the
    packed weights kept between epochs, one epoch per call)."""

    def __init__(self, X, y, H, B):
        self.X, self.y, self.B, self.H = X, y, B, H
        self.engine = _Engine("numba", fs.init_params(X.shape[1], H, 10, seed=SEED,
                                                      dtype=X.dtype))
        self._orders(len(X))
        self.limit = np.inf  # the benchmark's settings never diverge

    def epoch(self):
        return self.engine.epoch(self.X, self.y, self.next_order(), self.B, LEARNING_RATE,
                                 ALPHA, self.limit)[0]


class FastsoftmaxPixels(Fastsoftmax):
    """fastsoftmax fed the uint8 pixels as the loader returns them (scaled by
    1/255 inside the kernel, a quarter of the memory traffic); same model."""

    def __init__(self, X, y, H, B):
        super().__init__(X, y, H, B)
        # X holds pixel / 255 in float32, so this recovers the pixels exactly.
        self.X = np.rint(X * 255).astype(np.uint8)


class FastsoftmaxPack(_Shuffled):
    """fastsoftmax's answer to vmap: C configurations (here learning rates, as
    JaxVmap's) trained together, each minibatch gathered once for all of them."""

    def __init__(self, X, y, H, B, n_configs=4):
        self.X, self.y, self.B, self.H = X, y, B, H
        one = fs.init_params(X.shape[1], H, 10, seed=SEED, dtype=X.dtype)
        self.packed = kernels.Packed([one] * n_configs)  # plain SGD, as the sweep's default
        self.lrs = (LEARNING_RATE * 2.0 ** -np.arange(n_configs)).astype(X.dtype)
        self.alphas = np.full(n_configs, ALPHA, X.dtype)
        self._orders(len(X))

    def epoch(self):
        losses, _ = self.packed.epoch(self.X, self.y, self.next_order(), self.B, self.lrs,
                                      self.alphas)
        return float(losses[0])

    def trained(self, m: int):
        """Configuration m's trained weights, as Params."""
        return self.packed.params(m)


class NumpyReference(_Shuffled):
    """fastsoftmax.reference: the plain NumPy loop a user would write by hand."""

    def __init__(self, X, y, H, B):
        self.X, self.y, self.B = X, y, B
        self.params = fs.init_params(X.shape[1], H, 10, seed=SEED, dtype=X.dtype)
        self._orders(len(X))

    def epoch(self):
        self.params, loss, _ = fs.reference.train_epoch(self.params, self.X, self.y,
                                                        self.next_order(), self.B,
                                                        LEARNING_RATE, ALPHA)
        return loss


class TorchIdiomatic(_Shuffled):
    """nn.Sequential + CrossEntropyLoss + optim.SGD, L2 on the weights via weight_decay."""

    def __init__(self, X, y, H, B):
        torch = self.torch = _need("torch", "pip install torch==2.13.0")
        nn = torch.nn
        p = fs.init_params(X.shape[1], H, 10, seed=SEED, dtype=np.float32)
        self.model = nn.Sequential(nn.Linear(X.shape[1], H), nn.ReLU(), nn.Linear(H, 10))
        with torch.no_grad():  # nn.Linear stores W as (out, in)
            self.model[0].weight.copy_(torch.from_numpy(p.W1.T.copy()))
            self.model[0].bias.zero_()
            self.model[2].weight.copy_(torch.from_numpy(p.W2.T.copy()))
            self.model[2].bias.zero_()
        weights = [self.model[0].weight, self.model[2].weight]
        biases = [self.model[0].bias, self.model[2].bias]
        # weight_decay adds alpha*W to the gradient: the gradient of (alpha/2)||W||^2.
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": ALPHA},
                                    {"params": biases, "weight_decay": 0.0}],
                                   lr=LEARNING_RATE, momentum=0.0)
        self.loss_fn = nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.B = B
        self._orders(len(X))

    def epoch(self):
        order = self.torch.from_numpy(self.next_order())
        for start in range(0, len(order), self.B):
            idx = order[start:start + self.B]
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
        return float(loss.detach())


class TorchManual(_Shuffled):
    """A hand-written tensor loop: explicit forward and backward, no autograd."""

    def __init__(self, X, y, H, B):
        torch = self.torch = _need("torch", "pip install torch==2.13.0")
        p = fs.init_params(X.shape[1], H, 10, seed=SEED, dtype=np.float32)
        self.W1, self.b1, self.W2, self.b2 = (torch.from_numpy(a.copy()) for a in p)
        self.X, self.y, self.B = torch.from_numpy(X), torch.from_numpy(y), B
        self._orders(len(X))

    def epoch(self):
        torch = self.torch
        W1, b1, W2, b2 = self.W1, self.b1, self.W2, self.b2
        order = torch.from_numpy(self.next_order())
        with torch.no_grad():
            for start in range(0, len(order), self.B):
                idx = order[start:start + self.B]
                x, t = self.X[idx], self.y[idx]
                n = x.shape[0]
                a = torch.relu(torch.addmm(b1, x, W1))          # (n, H)
                z = torch.addmm(b2, a, W2)                       # (n, 10)
                g = torch.softmax(z, dim=1)                      # dL/dz = (p - onehot)/n
                g[torch.arange(n), t] -= 1.0
                g /= n
                gW2 = a.T @ g + ALPHA * W2
                da = (g @ W2.T) * (a > 0)
                gW1 = x.T @ da + ALPHA * W1
                W1 -= LEARNING_RATE * gW1
                b1 -= LEARNING_RATE * da.sum(0)
                W2 -= LEARNING_RATE * gW2
                b2 -= LEARNING_RATE * g.sum(0)
        return 0.0


def jax_step(with_loss: bool = False):
    """(jax, jax.numpy, step): step(params, x, t, lr, alpha) is one SGD step of the
    model, its gradient by jax.grad (also used by bench/jax_grid.py).  ``with_loss``:
    step returns (params, the minibatch's loss before the step), both from one pass
    (jax.value_and_grad), as a user who logs the training loss writes it."""
    jax = _need("jax", "pip install jax")
    jnp = jax.numpy

    def loss(params, x, t, alpha):
        W1, b1, W2, b2 = params
        a = jax.nn.relu(x @ W1 + b1)
        z = a @ W2 + b2
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), t[:, None], axis=1))
        return ce + 0.5 * alpha * (jnp.sum(W1 * W1) + jnp.sum(W2 * W2))

    def step(params, x, t, lr, alpha):
        if with_loss:
            value, grads = jax.value_and_grad(loss)(params, x, t, alpha)
            return tuple(p - lr * g for p, g in zip(params, grads)), value
        grads = jax.grad(loss)(params, x, t, alpha)
        return tuple(p - lr * g for p, g in zip(params, grads))

    return jax, jnp, step


def jax_epoch(jax, step, N, B, with_loss: bool = False):
    """One epoch as a JAX user jits it: epoch(params, lr, alpha, X, y, order) with the
    data on the device and the epoch's order passed in, each minibatch gathered
    inside lax.scan, the last smaller one after.  ``with_loss`` (for a step of
    ``jax_step(with_loss=True)``): epoch returns (params, the epoch's mean training
    loss, each minibatch weighted by its size), as fastsoftmax's sweep records it."""
    n_full = N // B

    def epoch(params, lr, alpha, X, y, order):
        def run(p, idx):  # (params after the step, its loss times its rows, or None)
            out = step(p, X[idx], y[idx], lr, alpha)
            return (out[0], out[1] * idx.shape[0]) if with_loss else (out, None)

        params, sums = jax.lax.scan(run, params, order[:n_full * B].reshape(n_full, B))
        last = 0
        if N % B:
            params, last = run(params, order[n_full * B:])
        return (params, (sums.sum() + last) / N) if with_loss else params

    return epoch


class JaxScan(_Shuffled):
    """A jitted epoch: lax.scan over the minibatches, gathered from the device-resident data."""

    def __init__(self, X, y, H, B):
        jax, jnp, step = jax_step()
        self.jax, self.jnp = jax, jnp
        self.X, self.y = jnp.asarray(X), jnp.asarray(y)  # once, as a user loads the data
        self.params = tuple(jnp.asarray(a) for a in fs.init_params(X.shape[1], H, 10,
                                                                   seed=SEED, dtype=X.dtype))
        self.lr = jnp.asarray(LEARNING_RATE, X.dtype)
        self.alpha = jnp.asarray(ALPHA, X.dtype)
        self.run = jax.jit(jax_epoch(jax, step, len(X), B))
        self._orders(len(X))

    def epoch(self):
        order = self.jnp.asarray(self.next_order())
        self.params = self.jax.block_until_ready(
            self.run(self.params, self.lr, self.alpha, self.X, self.y, order))
        return 0.0


class JaxVmap(JaxScan):
    """JAX's way to grid-search: vmap the jitted epoch over C configurations
    (here learning rates) that share one minibatch order."""

    def __init__(self, X, y, H, B, n_configs=4):
        jax, jnp, step = jax_step()
        self.jax, self.jnp = jax, jnp
        self.X, self.y = jnp.asarray(X), jnp.asarray(y)
        one = fs.init_params(X.shape[1], H, 10, seed=SEED, dtype=X.dtype)
        self.params = tuple(jnp.asarray(np.stack([a] * n_configs)) for a in one)
        self.lrs = jnp.asarray(LEARNING_RATE * 2.0 ** -np.arange(n_configs), X.dtype)
        self.lr = self.lrs  # what JaxScan.epoch passes
        self.alpha = jnp.asarray(ALPHA, X.dtype)
        self.run = jax.jit(jax.vmap(jax_epoch(jax, step, len(X), B),
                                    in_axes=(0, 0, None, None, None, None)))
        self.n_configs = n_configs
        self._orders(len(X))


class SklearnMLP:
    """MLPClassifier(solver="sgd", momentum=0): one partial_fit call is one epoch.

    Its L2 term is alpha * ||W||^2 / (2 * batch), so its alpha is ours times B.
    It draws its own initialisation and order (it offers no way to pass ours).
    """

    def __init__(self, X, y, H, B):
        nn = _need("sklearn.neural_network", "pip install scikit-learn")
        self.clf = nn.MLPClassifier(hidden_layer_sizes=(H,), solver="sgd", batch_size=B,
                                    learning_rate_init=LEARNING_RATE, momentum=0.0,
                                    nesterovs_momentum=False, alpha=ALPHA * B, shuffle=True,
                                    random_state=SEED)
        self.X, self.y = X, y
        self.classes = np.arange(10)

    def epoch(self):
        self.clf.partial_fit(self.X, self.y, classes=self.classes)
        return self.clf.loss_


PEERS = {
    "fastsoftmax": Fastsoftmax,
    "fastsoftmax-uint8": FastsoftmaxPixels,
    "numpy-reference": NumpyReference,
    "jax-scan": JaxScan,
    "torch-idiomatic": TorchIdiomatic,
    "torch-manual": TorchManual,
    "sklearn-mlp": SklearnMLP,
}


def make(name: str, X, y, H: int, B: int):
    return PEERS[name](X, y, H, B)
