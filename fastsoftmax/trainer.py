"""Training, evaluation and prediction: the public entry points.

Validates and converts inputs once, then hands whole epochs to either the
compiled kernels (``backend="numba"``) or the NumPy reference
(``backend="numpy"``).  Both see the same seeded initialisation and
minibatch order, so the same call gives the same result up to rounding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import kernels, reference
from .checks import (check_dtype, check_nonnegative_float, check_positive_float,
                     check_positive_int, check_X, check_y, pixels_to_float)
from .optimizers import (Optimizer, OptimizerState, check_optimizer_state, init_state,
                         make_optimizer)
from .params import Params, check_params, init_params, minibatch_orders

BACKENDS = ("numba", "numpy")


@dataclass
class History:
    """Per-epoch record of a training run (lists of equal length, one entry per epoch).

    train_loss : mean minibatch loss (cross-entropy + L2) over the epoch, each
        minibatch weighted by its size, at the weights it was computed with
    val_loss, val_accuracy : on (X_val, y_val) after the epoch (empty without them)
    seconds : wall time of the epoch, validation included
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.train_loss)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    params : Params, the trained weights (at the point of divergence, if any)
    history : History, one entry per completed epoch
    diverged : bool, True when a minibatch loss went non-finite or above
        :func:`fastsoftmax.reference.divergence_limit` (100 times the loss of
        a chance-level model at the starting weights); training stopped
        there, before that minibatch's update
    optimizer_state : OptimizerState, the optimiser's state at the end
        (momentum's velocity, Adam's moments and step count): pass it back
        with ``params`` to continue exactly where this run stopped
    """

    params: Params
    history: History
    diverged: bool
    optimizer_state: OptimizerState = field(default_factory=OptimizerState)


def _check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class _Engine:
    """One backend's epoch and evaluation functions on one model and its optimiser.

    X may be uint8 pixels for either backend: the kernels scale them as they
    read them; the reference gets them scaled once, up front.  The kernels
    keep the model and the optimiser state packed (kernels.Packed) from epoch
    to epoch: converted once at the start, and back only when asked for.
    """

    def __init__(self, backend: str, params: Params, optimizer: Optimizer | None = None,
                 state: OptimizerState | None = None):
        self.backend = backend
        self.dtype = params.dtype
        self.optimizer = optimizer or Optimizer()
        if backend == "numba":
            self.packed = kernels.Packed([params], [self.optimizer],
                                         None if state is None else [state])
        else:
            self.model = params.copy()  # the reference's Params, trained in turn
            self.opt_state = (init_state(self.optimizer, params) if state is None
                              else state.copy())

    def params(self) -> Params:
        if self.backend == "numba":
            return self.packed.params(0)
        return self.model

    def optimizer_state(self) -> OptimizerState:
        """The optimiser's state now (fresh arrays)."""
        if self.backend == "numba":
            return self.packed.optimizer_state(0)
        return self.opt_state.copy()

    def data(self, X):
        """X as this backend takes it (checked already, maybe uint8)."""
        if self.backend == "numpy" and X.dtype == np.uint8:
            return pixels_to_float(X, self.dtype)
        return X

    def epoch(self, X, y, order, batch_size, lr, alpha, limit):
        """One epoch; limit: the largest minibatch loss accepted (divergence_limit)."""
        if self.backend == "numba":
            losses, alive = self.packed.epoch(X, y, order, batch_size, [lr], [alpha], [limit])
            return float(losses[0]), not alive[0]
        self.model, loss, diverged = reference.train_epoch(
            self.model, X, y, order, batch_size, lr, alpha, limit, self.optimizer,
            self.opt_state)
        return loss, diverged

    def evaluate(self, X, y, alpha):
        mod = kernels if self.backend == "numba" else reference
        return mod.evaluate(self.params(), X, y, alpha)


def train(X, y, hidden_size: int = 40, batch_size: int = 64, learning_rate: float = 0.05,
          epochs: int = 5, alpha: float = 1e-4, seed: int = 0, dtype=np.float32,
          backend: str = "numba", X_val=None, y_val=None, params: Params | None = None,
          n_classes: int = 10, optimizer: str = "sgd", momentum: float = 0.9,
          nesterov: bool = False, beta1: float = 0.9, beta2: float = 0.999,
          epsilon: float = 1e-8, optimizer_state: OptimizerState | None = None) -> TrainResult:
    """Train the two-layer softmax network with minibatch SGD, momentum or Adam.

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
        Floating point, used as given; uint8 means pixel intensities, scaled by 1/255.
    y : array of int, shape (n_samples,), labels in 0 .. n_classes-1
    hidden_size : int >= 1 (ignored when ``params`` is given)
    batch_size : int >= 1; the last, smaller minibatch is used too
    learning_rate : float > 0
    epochs : int >= 1
    alpha : float >= 0, L2 strength on W1 and W2 (not on the biases)
    seed : int, seeds the initialisation and every epoch's minibatch order
    dtype : float32 (default, fast) or float64
    backend : "numba" (compiled kernels) or "numpy" (the reference)
    X_val, y_val : optional validation set, evaluated after every epoch
    params : optional Params to start from instead of a fresh initialisation
    n_classes : number of output classes (10 for Fashion-MNIST)
    optimizer : "sgd" (default: plain SGD), "momentum" or "adam", or an
        :class:`~fastsoftmax.optimizers.Optimizer` with its settings (then the four
        settings below are not read); the update rules are in
        :mod:`fastsoftmax.optimizers`
    momentum : float in [0, 1), for "momentum" (0.9)
    nesterov : bool, Nesterov's momentum (for "momentum"; default False, as torch)
    beta1, beta2 : floats in [0, 1), Adam's moment decay rates (0.9, 0.999)
    epsilon : float > 0, Adam's epsilon (1e-8)
    optimizer_state : optional OptimizerState to continue from (a previous
        TrainResult's, with its params); default: fresh (zero) state

    Returns
    -------
    TrainResult with params, history, diverged and optimizer_state.
    """
    dtype = check_dtype(dtype)
    backend = _check_backend(backend)
    batch_size = check_positive_int(batch_size, "batch_size")
    learning_rate = check_positive_float(learning_rate, "learning_rate")
    epochs = check_positive_int(epochs, "epochs")
    alpha = check_nonnegative_float(alpha, "alpha")
    n_classes = check_positive_int(n_classes, "n_classes")
    opt = make_optimizer(optimizer, momentum, nesterov, beta1, beta2, epsilon)
    fresh = params is None
    params, X, y, X_val, y_val = _start(params, hidden_size, n_classes, seed, dtype, X, y,
                                        X_val, y_val)
    if optimizer_state is not None:
        if fresh:
            raise ValueError("optimizer_state needs the params it belongs to: pass params too")
        optimizer_state = check_optimizer_state(optimizer_state, opt, params)
    orders = minibatch_orders(X.shape[0], epochs, seed)
    limit = reference.divergence_limit(params, alpha, n_classes)

    engine = _Engine(backend, params, opt, optimizer_state)
    X = engine.data(X)
    if X_val is not None:
        X_val = engine.data(X_val)
    history = History()
    diverged = False
    for e in range(epochs):
        t0 = time.perf_counter()
        loss, diverged = engine.epoch(X, y, orders[e], batch_size, learning_rate, alpha, limit)
        if diverged:
            break
        history.train_loss.append(loss)
        if X_val is not None:
            val_loss, val_acc = engine.evaluate(X_val, y_val, alpha)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
        history.seconds.append(time.perf_counter() - t0)
    return TrainResult(engine.params(), history, diverged, engine.optimizer_state())


def _start(params, hidden_size, n_classes, seed, dtype, X, y, X_val, y_val):
    """:func:`train`'s data, checked, and the model it starts from: ``params`` checked
    against them, or a fresh one.  Returns (params, X, y, X_val, y_val)."""
    if params is None:
        hidden_size = check_positive_int(hidden_size, "hidden_size")
        n_features = None
    else:
        params = check_params(params, dtype)
        n_features, hidden_size, n_out = params.shape
        if n_out != n_classes:
            raise ValueError(f"params has {n_out} outputs but n_classes is {n_classes}")
    X = check_X(X, dtype, n_features, keep_pixels=True)
    y = check_y(y, X.shape[0], n_classes)
    if (X_val is None) != (y_val is None):
        raise ValueError("X_val and y_val must be given together")
    if X_val is not None:
        X_val = check_X(X_val, dtype, X.shape[1], name="X_val", keep_pixels=True)
        y_val = check_y(y_val, X_val.shape[0], n_classes, name="y_val")
    if params is None:
        params = init_params(X.shape[1], hidden_size, n_classes, seed=seed, dtype=dtype)
    return params, X, y, X_val, y_val


def _prepare(params, X, n_features_name="X"):
    params = check_params(params)
    X = check_X(X, params.dtype, params.shape[0], name=n_features_name, keep_pixels=True)
    return params, X


def evaluate(params: Params, X, y, alpha: float = 0.0) -> tuple[float, float]:
    """(loss, accuracy) of ``params`` on X (n, D), y (n,).

    loss is the mean cross-entropy plus (alpha/2)(||W1||^2 + ||W2||^2);
    accuracy is the fraction of argmax predictions equal to y.
    """
    params, X = _prepare(params, X)
    y = check_y(y, X.shape[0], params.shape[2])
    alpha = check_nonnegative_float(alpha, "alpha")
    return kernels.evaluate(params, X, y, alpha)


def predict_proba(params: Params, X) -> np.ndarray:
    """Class probabilities, shape (n, n_classes), of params' dtype; rows sum to 1."""
    params, X = _prepare(params, X)
    return kernels.predict_proba(params, X)


def predict(params: Params, X) -> np.ndarray:
    """Most probable class per sample, shape (n,), int64."""
    return predict_proba(params, X).argmax(axis=1)
