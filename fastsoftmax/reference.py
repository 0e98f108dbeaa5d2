"""Plain NumPy reference: the executable specification of the model.

Readable rather than fast.  :mod:`fastsoftmax.kernels` exposes the same
function names with the same signatures, so every agreement test is one
line of reference and one line of kernel.

Shapes: X (n, D), y (n,) int, W1 (D, H), b1 (H,), W2 (H, K), b2 (K,).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .optimizers import ADAM, SGD, Optimizer, OptimizerState, init_state
from .params import Params


class Forward(NamedTuple):
    """What :func:`forward` computes and :func:`backward` needs."""

    A: np.ndarray  # (n, H) hidden pre-activations x W1 + b1
    Hid: np.ndarray  # (n, H) relu(A)
    Z: np.ndarray  # (n, K) logits


def forward(params: Params, X: np.ndarray) -> Forward:
    A = X @ params.W1 + params.b1  # (n, H)
    Hid = np.maximum(A, 0)  # (n, H)
    Z = Hid @ params.W2 + params.b2  # (n, K)
    return Forward(A, Hid, Z)


def log_softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of logits Z (n, K), stable for huge logits.

    Subtracting the row maximum keeps every exp() argument <= 0, so no
    overflow; log-sum-exp is then >= 0 and finite.
    """
    S = Z - Z.max(axis=1, keepdims=True)  # (n, K)
    return S - np.log(np.exp(S).sum(axis=1, keepdims=True))


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits Z (n, K) -> probabilities (n, K)."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def cross_entropy(Z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels y (n,) under logits Z (n, K)."""
    return float(-log_softmax(Z)[np.arange(len(y)), y].mean())


def l2_penalty(params: Params, alpha: float) -> float:
    """(alpha / 2) (||W1||^2 + ||W2||^2): weights only, never the biases."""
    return 0.5 * alpha * float((params.W1 ** 2).sum() + (params.W2 ** 2).sum())


def loss(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> float:
    return cross_entropy(forward(params, X).Z, y) + l2_penalty(params, alpha)


def backward(params: Params, X: np.ndarray, y: np.ndarray, fwd: Forward,
             alpha: float) -> Params:
    """Gradients of :func:`loss` with respect to every parameter."""
    n = X.shape[0]
    # d(-log softmax(z)[y]) / dz = p - onehot(y): the log-sum-exp term
    # differentiates to p, the -z[y] term to -onehot(y).  Dividing by n
    # averages over the minibatch.
    dZ = softmax(fwd.Z)  # (n, K)
    dZ[np.arange(n), y] -= 1
    dZ /= n
    dW2 = fwd.Hid.T @ dZ + alpha * params.W2  # (H, K)
    db2 = dZ.sum(axis=0)  # (K,)
    dA = (dZ @ params.W2.T) * (fwd.A > 0)  # (n, H): relu passes gradient where A > 0
    dW1 = X.T @ dA + alpha * params.W1  # (D, H)
    db1 = dA.sum(axis=0)  # (H,)
    return Params(dW1, db1, dW2, db2)


def loss_and_grads(params: Params, X: np.ndarray, y: np.ndarray,
                   alpha: float) -> tuple[float, Params]:
    """Loss (cross-entropy + L2) on X, y and its gradient as a Params."""
    fwd = forward(params, X)
    value = cross_entropy(fwd.Z, y) + l2_penalty(params, alpha)
    return value, backward(params, X, y, fwd, alpha)


# A minibatch loss above this many times the starting loss means divergence.
DIVERGENCE_FACTOR = 100.0


def divergence_limit(params: Params, alpha: float, n_classes: int) -> float:
    """The largest minibatch loss that training from ``params`` accepts.

    DIVERGENCE_FACTOR times the loss a model starts from when it predicts no
    better than chance: log(K) of cross-entropy plus the L2 penalty of the
    starting weights (log(K) also keeps the limit sane when training resumes
    from a model whose loss is already tiny).  A learning rate too large for
    the data either overflows (a non-finite loss) or, more often with ReLU,
    throws the weights so far that every hidden unit dies and the loss sits
    at hundreds or more (8.8e12 in the first epoch of learning_rate=1e3 on
    Fashion-MNIST); SGD that works stays within a few times its start.
    """
    return DIVERGENCE_FACTOR * (float(np.log(n_classes)) + l2_penalty(params, alpha))


def diverged(value: float, limit: float) -> bool:
    """True when a minibatch loss is non-finite or above ``limit``."""
    return not value <= limit  # NaN compares False


def update(params: Params, grads: Params, learning_rate: float, optimizer: Optimizer,
           state: OptimizerState) -> Params:
    """theta after one step of ``optimizer`` (see :mod:`fastsoftmax.optimizers`).

    grads: the gradient with its L2 term (as :func:`backward` gives it).
    state: advanced in place (its slots replaced, its step counted).
    Arithmetic is in the params' dtype, the settings rounded to it.
    """
    dt = params.dtype.type
    lr = dt(learning_rate)
    state.step += 1
    if optimizer.code == SGD:
        return Params(*(p - lr * g for p, g in zip(params, grads)))
    if optimizer.code == ADAM:
        b1, b2, eps = dt(optimizer.beta1), dt(optimizer.beta2), dt(optimizer.epsilon)
        m = Params(*(b1 * m + (1 - b1) * g for m, g in zip(state.slots[0], grads)))
        v = Params(*(b2 * v + (1 - b2) * g * g for v, g in zip(state.slots[1], grads)))
        state.slots = [m, v]
        # The bias corrections in float64, then rounded, as torch.optim.Adam does.
        step_size = dt(float(lr) / (1 - optimizer.beta1 ** state.step))
        bc2_sqrt = dt(np.sqrt(1 - optimizer.beta2 ** state.step))
        return Params(*(p - step_size * m_ / (np.sqrt(v_) / bc2_sqrt + eps)
                        for p, m_, v_ in zip(params, m, v)))
    mu = dt(optimizer.momentum)
    v = Params(*(mu * v + g for v, g in zip(state.slots[0], grads)))
    state.slots = [v]
    if optimizer.nesterov:
        return Params(*(p - lr * (g + mu * v_) for p, g, v_ in zip(params, grads, v)))
    return Params(*(p - lr * v_ for p, v_ in zip(params, v)))


def sgd_step(params: Params, X: np.ndarray, y: np.ndarray, learning_rate: float,
             alpha: float, limit: float = np.inf, optimizer: Optimizer | None = None,
             state: OptimizerState | None = None) -> tuple[float, Params]:
    """One step of ``optimizer`` (default: plain SGD) on the minibatch X, y.

    Returns the loss at the incoming parameters and the updated parameters
    (for SGD ``theta - learning_rate * grad``; see :func:`update`).  A loss
    that has diverged (non-finite, or above ``limit``: see
    :func:`divergence_limit`) leaves the parameters and ``state`` as they
    were: the caller stops there.  ``state`` (default: fresh) is advanced in
    place.
    """
    optimizer = optimizer or Optimizer()
    value, grads = loss_and_grads(params, X, y, alpha)
    if diverged(value, limit):
        return value, params
    if state is None:
        state = init_state(optimizer, params)
    return value, update(params, grads, learning_rate, optimizer, state)


def train_epoch(params: Params, X: np.ndarray, y: np.ndarray, order: np.ndarray,
                batch_size: int, learning_rate: float, alpha: float,
                limit: float = np.inf, optimizer: Optimizer | None = None,
                state: OptimizerState | None = None) -> tuple[Params, float, bool]:
    """One epoch: minibatches are consecutive slices of ``order`` (n,).

    The last, smaller minibatch is used and averaged over its own size.
    ``optimizer`` defaults to plain SGD; ``state`` (its state, default
    fresh) is advanced in place, step by step.

    Returns
    -------
    params : the trained Params
    mean_loss : float, the minibatch losses averaged with weights n_b / n
    diverged : bool, True if a minibatch loss was non-finite or above
        ``limit`` (training stopped before that minibatch's update)
    """
    optimizer = optimizer or Optimizer()
    if state is None:
        state = init_state(optimizer, params)
    n = order.shape[0]
    total = 0.0
    # Overflow is how divergence shows; it is reported by the returned flag.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            value, params = sgd_step(params, X[idx], y[idx], learning_rate, alpha, limit,
                                     optimizer, state)
            if diverged(value, limit):
                return params, float("nan"), True
            total += value * len(idx)
    return params, total / n, False


def predict_proba(params: Params, X: np.ndarray) -> np.ndarray:
    return softmax(forward(params, X).Z)


def evaluate(params: Params, X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, float]:
    """(loss, accuracy) of params on X, y; loss includes the L2 term."""
    Z = forward(params, X).Z
    value = cross_entropy(Z, y) + l2_penalty(params, alpha)
    return value, float((Z.argmax(axis=1) == y).mean())
