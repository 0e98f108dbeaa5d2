"""``SoftmaxMLPClassifier``: a scikit-learn estimator on the fastsoftmax trainer.

It follows scikit-learn's conventions (hyperparameters stored by ``__init__``,
validation in ``fit``, fitted attributes ending in ``_``) and trains with the
same compiled epoch kernel as :func:`fastsoftmax.train`, so the same settings
give the same weights.  Requires scikit-learn (``pip install '.[sklearn]'`` in a
clone of fastsoftmax); ``import fastsoftmax`` does not.
"""

from __future__ import annotations

import json
import numbers
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import reference
from .host.atomic import atomic_open
from .checks import (check_dtype, check_nonnegative_float, check_positive_float,
                     check_positive_int)
from .optimizers import OPTIMIZER_PARAMS, OptimizerState, check_optimizer_state, make_optimizer
from .params import Params, _seed_streams, init_params
from .trainer import _check_backend, _Engine, predict_proba as _predict_proba

_FORMAT = "fastsoftmax.SoftmaxMLPClassifier/2"
# Version 1 files (before the optimisers) hold plain-SGD models and no optimiser state.
_FORMAT_1 = "fastsoftmax.SoftmaxMLPClassifier/1"


# alpha="auto" is ALPHA_AUTO / n_samples: the penalty ||W1||^2 + ||W2||^2 added
# once to the summed (not averaged) cross-entropy of the training set, so L2
# weighs less as the data grow.  Chosen with bench/defaults.py (README).
ALPHA_AUTO = 2.0


def diverged_message(epoch: int, limit: float) -> str:
    """The RuntimeWarning of a fit whose training diverged in ``epoch`` (1-based)."""
    return (f"SoftmaxMLPClassifier: training diverged in epoch {epoch} (a minibatch loss was "
            f"non-finite or above {limit:.3g}, {reference.DIVERGENCE_FACTOR:g} times the loss "
            "at the start); it stopped there, keeping the weights before that minibatch (try "
            "a smaller learning_rate)")


def unconverged_message(epochs: int) -> str:
    """The ConvergenceWarning of a fit that ran all its ``epochs`` still improving."""
    return (f"SoftmaxMLPClassifier: reached epochs={epochs} before the loss stopped improving; "
            "more epochs may help")


class FitRule:
    """What ``fit`` keeps epoch by epoch, and MLPClassifier's stopping rule: stop after
    ``n_iter_no_change`` epochs without a gain of ``tol`` in the training loss, or with
    early stopping in the validation accuracy (then keeping the best epoch's weights).
    SoftmaxMLPClassifier._run and the searches (fastsoftmax.search) both step it.

    h: the checked hyperparameters (``tol``, ``n_iter_no_change``, ``optimizer``, ``alpha``
    resolved); validating: scores come with each epoch; stop_early: the rule may stop.
    """

    def __init__(self, h: dict, validating: bool, stop_early: bool):
        self.h, self.stop_early = h, stop_early
        self.curve, self.scores = [], ([] if validating else None)
        self.best_loss, self.best_score, self.best_params, self.stale = np.inf, -np.inf, None, 0

    def epoch(self, loss: float, score, params) -> tuple[bool, str]:
        """Record an epoch's mean training loss and (validating) its validation accuracy;
        params: a function giving the weights now.  Returns (whether the rule stops here,
        the epoch's verbose line without its seconds)."""
        self.curve.append(loss)
        line = f"epoch {len(self.curve)}: loss {loss:.6f}"
        tol = self.h["tol"] or 0.0
        if self.scores is not None:
            self.scores.append(score)
            line += f", validation score {score:.6f}"
            improved = score > self.best_score + tol
            if score > self.best_score:
                self.best_score, self.best_params = score, params()
        else:
            improved = loss < self.best_loss - tol
            self.best_loss = min(self.best_loss, loss)
        self.stale = 0 if improved else self.stale + 1
        return self.stop_early and self.stale >= self.h["n_iter_no_change"], line

    def result(self, params, optimizer_state, diverged: bool) -> dict:
        """The fitted state as _set_state takes it: the best epoch's weights with early
        stopping, else ``params()`` (the last); the optimiser's state is the last
        epoch's, as MLPClassifier keeps it."""
        validating = self.scores is not None
        return dict(
            params_=self.best_params.copy() if self.best_params is not None else params(),
            loss_curve=list(self.curve), diverged_=diverged, _optimizer=self.h["optimizer"],
            _optimizer_state=optimizer_state, alpha_=self.h["alpha"],
            best_loss_=None if validating else float(self.best_loss),
            validation_scores_=list(self.scores) if validating else None,
            best_validation_score_=float(self.best_score) if validating else None)


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _writable(X: np.ndarray) -> np.ndarray:
    """X, copied if it is read-only: numba types a read-only array apart and would compile
    the kernels again for it, seconds each, where the copy takes milliseconds.  Read-only
    arrays are common here: joblib hands GridSearchCV's workers large arrays as read-only
    memmaps, and validate_data passes them on as they are."""
    return np.require(X, requirements=["W"])


class SoftmaxMLPClassifier(ClassifierMixin, BaseEstimator):
    """Two-layer softmax network (one ReLU hidden layer) trained by Adam, momentum or SGD.

    The model, loss and updates are those of :func:`fastsoftmax.train`:
    ``p = softmax(relu(X W1 + b1) W2 + b2)``, minibatch cross-entropy plus
    ``(alpha/2)(||W1||^2 + ||W2||^2)``, each epoch visiting every sample once
    in a seeded random order; the update rules are in
    :mod:`fastsoftmax.optimizers`.  The defaults (Adam, 100 hidden units, up
    to 200 epochs with MLPClassifier's stopping rule) were chosen to fit like
    ``MLPClassifier()``'s on small problems (bench/defaults.py).  Unlike
    :func:`fastsoftmax.train`, X is used as given whatever its dtype (the
    scikit-learn convention): scale uint8 pixels yourself, e.g. ``X / 255``.

    Parameters
    ----------
    hidden_size : int, default 100
        Number of hidden ReLU units.
    batch_size : int, default 64
        Minibatch size; the last, smaller minibatch of an epoch is used too.
    learning_rate : float, default 1e-3
        Step size.  1e-3 suits Adam; plain SGD wants about 0.05 on inputs
        scaled to [0, 1] or standardised.
    epochs : int, default 200
        Maximum number of epochs ``fit`` runs (the counterpart of
        ``MLPClassifier``'s ``max_iter``).  ``partial_fit`` runs one epoch per call.
    alpha : float >= 0 or "auto", default "auto"
        L2 strength on the weights (not the biases), per minibatch mean loss;
        ``MLPClassifier``'s ``alpha`` equals ours times the batch size.
        "auto" is ``2 / n_samples`` of the data ``fit`` trains on (after the
        early-stopping split; ``partial_fit``: its first call's): the penalty
        ``||W1||^2 + ||W2||^2`` added once to the summed cross-entropy of the
        training set, so it weighs less the more data there are.  The value
        used is ``alpha_``.
    optimizer : "adam" (default), "momentum" or "sgd"
    momentum : float in [0, 1), default 0.9 (for "momentum")
    nesterov : bool, default False (for "momentum"; MLPClassifier's default is True)
    beta1, beta2 : floats in [0, 1), default 0.9, 0.999 (for "adam")
    epsilon : float > 0, default 1e-8 (for "adam")
    dtype : "float32" (default, fast) or "float64"
    backend : "numba" (compiled kernels, default) or "numpy" (the reference)
    random_state : None, int or numpy RandomState, default None
        An int is used as ``fastsoftmax.train``'s ``seed``; it seeds the
        initialisation, the minibatch orders and the validation split.
    shuffle : bool, default True
        Visit the samples in a new random order each epoch; False visits
        them in the given order.
    verbose : bool, default False
        Print one line per epoch to stdout: loss, validation score, seconds.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified);
        stop when its accuracy has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch.
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int, default 10
        Without early stopping, training stops when the training loss has
        not improved by ``tol`` for this many epochs (as ``MLPClassifier``).
    tol : float >= 0 or None, default 1e-4
        None runs exactly ``epochs`` epochs, which is what ``fastsoftmax.train`` does.
    warm_start : bool, default False
        Start ``fit`` from the current weights instead of a new initialisation.

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when X had string column names)
    coefs_ : [W1 (n_features, hidden_size), W2 (hidden_size, n_classes)]
    intercepts_ : [b1 (hidden_size,), b2 (n_classes,)]
    params_ : fastsoftmax.Params, the same arrays as coefs_ and intercepts_
    n_iter_ : int, epochs run (in total, across warm starts and partial_fit calls)
    t_ : int, training samples seen
    loss_curve_ : list of float, mean training loss of each epoch
    alpha_ : float, the L2 strength used (alpha, or what "auto" came to)
    best_loss_ : float or None (None with early stopping)
    validation_scores_ : list of float or None, validation accuracy per epoch
    best_validation_score_ : float or None
    diverged_ : bool, True when a minibatch loss went non-finite or above
        100 times the loss at the start (``fastsoftmax.reference.divergence_limit``,
        the rule ``fastsoftmax.train`` and the sweep use); training stopped
        there, keeping the weights before that minibatch (a RuntimeWarning says so)
    """

    def __init__(self, hidden_size=100, batch_size=64, learning_rate=1e-3, epochs=200,
                 alpha="auto", dtype="float32", backend="numba", random_state=None,
                 shuffle=True, verbose=False, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, warm_start=False, optimizer="adam",
                 momentum=0.9, nesterov=False, beta1=0.9, beta2=0.999, epsilon=1e-8):
        self.optimizer = optimizer
        self.momentum = momentum
        self.nesterov = nesterov
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.hidden_size = hidden_size
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.alpha = alpha
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.shuffle = shuffle
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start

    # ------------------------------------------------------------------ checks

    def _hyperparameters(self) -> dict:
        """The hyperparameters, checked; a bad one raises ValueError naming it."""
        h = dict(
            hidden_size=check_positive_int(self.hidden_size, "hidden_size"),
            batch_size=check_positive_int(self.batch_size, "batch_size"),
            learning_rate=check_positive_float(self.learning_rate, "learning_rate"),
            epochs=check_positive_int(self.epochs, "epochs"),
            alpha="auto" if isinstance(self.alpha, str) and self.alpha == "auto"
            else check_nonnegative_float(self.alpha, "alpha"),
            dtype=check_dtype(self.dtype),
            backend=_check_backend(self.backend),
            shuffle=_check_bool(self.shuffle, "shuffle"),
            verbose=_check_bool(self.verbose, "verbose"),
            early_stopping=_check_bool(self.early_stopping, "early_stopping"),
            n_iter_no_change=check_positive_int(self.n_iter_no_change, "n_iter_no_change"),
            warm_start=_check_bool(self.warm_start, "warm_start"),
            optimizer=make_optimizer(**{k: getattr(self, k) for k in OPTIMIZER_PARAMS}),
        )
        vf = check_positive_float(self.validation_fraction, "validation_fraction")
        if not vf < 1:
            raise ValueError(f"validation_fraction must be < 1, got {self.validation_fraction!r}")
        h["validation_fraction"] = vf
        h["tol"] = None if self.tol is None else check_nonnegative_float(self.tol, "tol")
        rs = self.random_state
        if not (rs is None or isinstance(rs, (numbers.Integral, np.random.RandomState))) \
                or isinstance(rs, (bool, np.bool_)):
            raise ValueError(f"random_state must be None, an int or a RandomState, got {rs!r}")
        return h

    def _seed(self) -> int:
        """An int random_state is the seed itself (as in fs.train); otherwise draw one."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    @staticmethod
    def _check_targets(y) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: y is {kind!r}; SoftmaxMLPClassifier "
                             "needs one class label per sample")
        return y

    def _encode(self, y, classes) -> np.ndarray:
        """Labels -> indices into classes (sorted), int64; unknown labels are an error."""
        idx = np.searchsorted(classes, y)
        idx = np.minimum(idx, len(classes) - 1)
        bad = classes[idx] != y
        if bad.any():
            raise ValueError(f"y contains labels not in classes: {np.unique(y[bad])[:10].tolist()}")
        return idx.astype(np.int64)

    @staticmethod
    def _validation_split(X, y, n_classes, fraction, seed):
        """Hold out ``fraction`` of (X, y) for early stopping.

        Stratified by class where every class can be represented on both
        sides (as MLPClassifier does); on data too small for that, a plain
        seeded random split rather than an error.
        """
        counts = np.bincount(y, minlength=n_classes)
        n_val = int(np.ceil(fraction * len(y)))
        if len(y) - n_val < 1 or n_val < 1:
            raise ValueError(f"early_stopping: validation_fraction={fraction} of {len(y)} "
                             "samples leaves no training or no validation samples")
        stratify = y if counts.min() >= 2 and n_classes <= min(n_val, len(y) - n_val) else None
        return train_test_split(X, y, test_size=n_val, random_state=seed, stratify=stratify)

    # ----------------------------------------------------------------- fitting

    def fit(self, X, y):
        """Train on X (n_samples, n_features), y (n_samples,) for up to ``epochs`` epochs.

        Returns self.  On any error the estimator is left as it was.
        """
        h = self._hyperparameters()
        warm = h["warm_start"] and hasattr(self, "params_")
        X, y = validate_data(self, X, y, dtype=h["dtype"], order="C", reset=not warm)
        X = _writable(X)
        y = self._check_targets(y)
        if warm:
            classes = self.classes_
            yi = self._encode(y, classes)
        else:
            classes, yi = np.unique(y, return_inverse=True)
            yi = yi.astype(np.int64)
        if len(classes) < 2:
            raise ValueError(f"y has only one class ({classes[0]!r}); a classifier needs at "
                             "least 2 classes")
        seed = self._seed()

        X_val = y_val = None
        if h["early_stopping"]:
            X, X_val, yi, y_val = self._validation_split(X, yi, len(classes),
                                                         h["validation_fraction"], seed)
            X, X_val = np.ascontiguousarray(X), np.ascontiguousarray(X_val)

        if warm:
            params = self.params_.astype(h["dtype"])
            prior = (self.n_iter_, self.t_, self.loss_curve_)
            if params.shape[1] != h["hidden_size"]:
                raise ValueError(f"hidden_size is {h['hidden_size']} but the fitted model has "
                                 f"{params.shape[1]} hidden units (warm_start)")
        else:
            params = init_params(X.shape[1], h["hidden_size"], len(classes), seed=seed,
                                 dtype=h["dtype"])
            prior = (0, 0, [])
        _, order_rng = _seed_streams(seed)
        if h["alpha"] == "auto":
            h["alpha"] = ALPHA_AUTO / X.shape[0]
        # Like MLPClassifier, fit starts the optimiser afresh, warm_start or not.
        run = self._run(h, params, None, X, yi, X_val, y_val, order_rng, h["epochs"],
                        stop_early=h["tol"] is not None)
        self._order_rng = order_rng  # partial_fit after fit continues this sequence
        return self._set_state(classes, prior, run, X.shape[0])

    def partial_fit(self, X, y, classes=None):
        """One epoch over X (n_samples, n_features), y (n_samples,).

        ``classes`` (every label that will ever be seen) is required on the
        first call and must not change later.  Early stopping does not apply.
        Returns self.
        """
        h = self._hyperparameters()
        first = not hasattr(self, "params_")
        X, y = validate_data(self, X, y, dtype=h["dtype"], order="C", reset=first)
        X = _writable(X)
        y = self._check_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            classes = np.unique(column_or_1d(classes))
            if len(classes) < 2:
                raise ValueError(f"classes has {len(classes)} label(s); a classifier needs at "
                                 "least 2 classes")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first "
                             f"partial_fit call, {self.classes_!r}")
        else:
            classes = self.classes_
        yi = self._encode(y, classes)
        if first:
            seed = self._seed()
            params = init_params(X.shape[1], h["hidden_size"], len(classes), seed=seed,
                                 dtype=h["dtype"])
            order_rng = _seed_streams(seed)[1]
            prior = (0, 0, [])
        else:
            params = self.params_.astype(h["dtype"])
            # Copy the generator so a failed call leaves the estimator untouched.
            order_rng = np.random.Generator(type(self._order_rng.bit_generator)())
            order_rng.bit_generator.state = self._order_rng.bit_generator.state
            prior = (self.n_iter_, self.t_, self.loss_curve_)
        # partial_fit continues the optimiser (velocity, moments, step count),
        # unless the rule or its settings changed since (set_params).
        state = None
        if not first and self._optimizer == h["optimizer"]:
            state = self._optimizer_state
        if h["alpha"] == "auto":  # resolved on the first call, then kept
            h["alpha"] = ALPHA_AUTO / X.shape[0] if first else self.alpha_
        run = self._run(h, params, state, X, yi, None, None, order_rng, 1, stop_early=False)
        self._order_rng = order_rng
        return self._set_state(classes, prior, run, X.shape[0])

    def _run(self, h, params, opt_state, X, y, X_val, y_val, order_rng, epochs,
             stop_early) -> dict:
        """Train params (with the optimiser's state, None: fresh) for up to ``epochs``
        epochs; return the new fitted state."""
        engine = _Engine(h["backend"], params, h["optimizer"], opt_state)
        rule = FitRule(h, X_val is not None, stop_early)
        diverged = False
        n = X.shape[0]
        limit = reference.divergence_limit(params, h["alpha"], params.shape[2])
        for _ in range(epochs):
            t0 = time.perf_counter()
            order = order_rng.permutation(n) if h["shuffle"] else np.arange(n, dtype=np.int64)
            loss, diverged = engine.epoch(X, y, order, h["batch_size"], h["learning_rate"],
                                          h["alpha"], limit)
            if diverged:
                warnings.warn(diverged_message(len(rule.curve) + 1, limit), RuntimeWarning,
                              stacklevel=3)  # point at the caller of fit / partial_fit
                break
            score = None if X_val is None else engine.evaluate(X_val, y_val, 0.0)[1]
            stop, line = rule.epoch(loss, score, engine.params)
            if h["verbose"]:
                print(f"{line}, {time.perf_counter() - t0:.2f} s", file=sys.stdout, flush=True)
            if stop:
                break
        else:
            if stop_early and epochs > 1:
                warnings.warn(unconverged_message(epochs), ConvergenceWarning, stacklevel=3)
        return rule.result(engine.params, engine.optimizer_state(), diverged)

    def _set_state(self, classes, prior, run, n_samples):
        """Assign every fitted attribute at once, after all the work succeeded.

        prior : (n_iter_, t_, loss_curve_) before this call; run : what _run returned.
        """
        n_iter, t, curve = prior
        new = run.pop("loss_curve")
        self.classes_ = classes
        self.n_iter_ = n_iter + len(new)
        self.t_ = t + n_samples * len(new)
        self.loss_curve_ = list(curve) + new
        for key, value in run.items():
            setattr(self, key, value)
        self.coefs_ = [self.params_.W1, self.params_.W2]
        self.intercepts_ = [self.params_.b1, self.params_.b2]
        return self

    # --------------------------------------------------------------- prediction

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "params_")
        return _writable(validate_data(self, X, dtype=self.params_.dtype, order="C",
                                       reset=False))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes) in the order of classes_."""
        X = self._check_X(X)
        return _predict_proba(self.params_, X)

    def predict_log_proba(self, X) -> np.ndarray:
        """log(predict_proba(X)), shape (n_samples, n_classes)."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):  # a probability that underflowed to 0 is -inf
            return np.log(proba, out=proba)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, shape (n_samples,), from classes_."""
        best = self.predict_proba(X).argmax(axis=1)  # checks fitted before classes_ is read
        return self.classes_[best]

    # ------------------------------------------------------------ persistence

    def save(self, path) -> None:
        """Write the fitted model to a portable ``.npz`` (no pickle), atomically.

        Holds the weights, classes_, the hyperparameters, feature names and the
        training record; :meth:`load` reads it back.
        """
        check_is_fitted(self, "params_")
        classes = np.asarray(self.classes_)
        if classes.dtype == object:  # e.g. strings from a DataFrame; store without pickle
            classes = np.asarray(classes.tolist())
            if classes.dtype == object:
                raise ValueError("save: classes_ must be numbers or strings to be stored "
                                 "without pickle; use pickle for other label types")
        meta = dict(format=_FORMAT, hyperparameters=self.get_params(), n_iter_=self.n_iter_,
                    t_=self.t_, loss_curve_=self.loss_curve_, best_loss_=self.best_loss_,
                    validation_scores_=self.validation_scores_,
                    best_validation_score_=self.best_validation_score_,
                    diverged_=self.diverged_,
                    # so partial_fit on the loaded model continues the same minibatch orders
                    order_rng=self._order_rng.bit_generator.state,
                    # ...and the optimiser where it was (the slots are arrays below)
                    optimizer=self._optimizer.as_dict(),
                    optimizer_step=self._optimizer_state.step, alpha_=self.alpha_)
        if not isinstance(meta["hyperparameters"]["random_state"], (int, type(None))):
            meta["hyperparameters"]["random_state"] = None  # a RandomState is not portable
        arrays = dict(self.params_._asdict(), classes=classes, meta=np.asarray(json.dumps(meta)))
        for j, slot in enumerate(self._optimizer_state.slots):
            arrays.update({f"optimizer_slot{j}_{k}": a for k, a in slot._asdict().items()})
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in"] = np.asarray(self.feature_names_in_.tolist())
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "SoftmaxMLPClassifier":
        """Read a model written by :meth:`save`; it predicts exactly as the saved one."""
        from .params import check_params, read_npz

        what = "a SoftmaxMLPClassifier file"
        slot_names = [f"optimizer_slot{j}_{k}" for j in range(2) for k in Params._fields]
        f = read_npz(path, what, ("meta", "classes", *Params._fields),
                     ("feature_names_in", *slot_names))
        try:
            meta = json.loads(str(f["meta"]))
            if meta.get("format") not in (_FORMAT, _FORMAT_1):
                raise KeyError("format")
            for key in ("hyperparameters", "diverged_", "best_loss_", "validation_scores_",
                        "best_validation_score_", "loss_curve_", "n_iter_", "t_", "order_rng"):
                meta[key]
            hyper = meta["hyperparameters"]
            if meta["format"] == _FORMAT_1:  # plain SGD, which keeps no state
                hyper.setdefault("optimizer", "sgd")
                step, alpha = 0, float(hyper["alpha"])
            else:
                step, alpha = meta["optimizer_step"], float(meta["alpha_"])
            optimizer = make_optimizer(**{k: hyper[k] for k in OPTIMIZER_PARAMS if k in hyper})
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: not {what} (its meta is not this version's: "
                             f"{type(exc).__name__} {exc})") from None
        params = check_params(Params(*(f[k] for k in Params._fields)), name=str(path))
        try:
            slots = [check_params(Params(*(f[f"optimizer_slot{j}_{k}"] for k in Params._fields)),
                                  params.dtype, name=f"{path}: optimizer state")
                     for j in range(optimizer.n_slots)]
        except KeyError as exc:
            raise ValueError(f"{path}: not {what} (optimizer {optimizer.name!r} needs its "
                             f"state, and {exc} is missing)") from None
        try:
            state = check_optimizer_state(OptimizerState(slots, step), optimizer, params)
        except ValueError:
            raise ValueError(f"{path}: its optimizer state does not fit its weights") from None
        classes = f["classes"]
        names = f.get("feature_names_in")
        if classes.shape != (params.shape[2],):
            raise ValueError(f"{path}: {classes.shape[0]} classes but the weights have "
                             f"{params.shape[2]} outputs")
        if not np.all(classes[1:] > classes[:-1]):  # as fit keeps them: np.unique's
            raise ValueError(f"{path}: its classes are not sorted and distinct")
        model = cls._checked(meta["hyperparameters"], path)
        model.n_features_in_ = params.shape[0]
        if names is not None:
            model.feature_names_in_ = names.astype(object)
        prior = (0, 0, [])
        run = {k: meta[k] for k in ("diverged_", "best_loss_", "validation_scores_",
                                    "best_validation_score_")}
        run.update(params_=params, loss_curve=meta["loss_curve_"], alpha_=alpha)
        model._set_state(classes, prior, run, 0)
        model.n_iter_, model.t_ = meta["n_iter_"], meta["t_"]
        model._order_rng = np.random.default_rng()
        model._order_rng.bit_generator.state = meta["order_rng"]
        model._optimizer = optimizer
        model._optimizer_state = state
        return model

    @classmethod
    def _checked(cls, hyper, path) -> "SoftmaxMLPClassifier":
        """The model a file's hyperparameters describe, each checked as fit checks it."""
        if not isinstance(hyper, dict):
            raise ValueError(f"{path}: its hyperparameters are not a mapping")
        unknown = sorted(set(hyper) - set(cls._get_param_names()))
        if unknown:
            raise ValueError(f"{path}: unknown hyperparameters {', '.join(map(str, unknown))}")
        model = cls(**hyper)
        try:
            model._hyperparameters()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
