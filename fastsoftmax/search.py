"""Hyperparameter searches with scikit-learn's API on fastsoftmax's engine:
:class:`SoftmaxMLPGridSearchCV` and :class:`SoftmaxMLPRandomizedSearchCV`.

``GridSearchCV(SoftmaxMLPClassifier(), grid)`` fits one candidate on one fold at a
time.  These searches first train every (candidate, fold) pair here, then let
scikit-learn's own search run on the results:

- every pair is trained exactly as ``SoftmaxMLPClassifier.fit`` would train it (the
  same seed, initialisation, minibatch orders, early-stopping split, stopping rule and
  divergence rule), so the scores, ``best_params_`` and weights are GridSearchCV's;
- pairs of one fold that draw the same minibatch orders (the same ``random_state``,
  ``batch_size``, ``shuffle`` and early-stopping split) train together as packs of
  the epoch kernel (:class:`fastsoftmax.kernels.Packed`): each minibatch is gathered
  once for the pack, and each model sees exactly the operations it would see alone;
- candidates that differ only in ``epochs`` are one training run, each read off at its
  own epoch count;
- packs run on ``n_jobs`` threads (the kernels release the GIL), or as tasks on a Dask
  cluster (``scheduler``, as the sweep's ``--scheduler``); a fold is the caller's X with a
  set of row indices, never a copy;
- scikit-learn's search (``BaseSearchCV.fit``) then "fits" each pair instantly from
  those results, scores it on its test fold with the scorers it was given, and builds
  ``cv_results_`` and the refit as it always does.  The refit on the whole data is a
  plain ``SoftmaxMLPClassifier.fit``.

An int ``random_state`` on the estimator makes every candidate of a fold share its
minibatch orders, which is what lets them share packs; with ``random_state=None``
each pair draws its own seed (as in GridSearchCV) and trains alone.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (GridSearchCV, ParameterGrid, ParameterSampler,
                                     RandomizedSearchCV, check_cv)
from sklearn.utils import _safe_indexing, check_array
from sklearn.utils.validation import _get_feature_names, indexable

from . import kernels, reference
from .estimator import (ALPHA_AUTO, FitRule, SoftmaxMLPClassifier, diverged_message,
                        unconverged_message)
from .host.cpus import available_cpus
from .params import _seed_streams, init_params

PACK_SIZE = 4  # models per pack: as the sweep's packs


def _key(estimator) -> str:
    """What identifies a candidate: its estimator's parameters (a RandomState by its state,
    which every clone copies)."""
    items = []
    for name, value in sorted(estimator.get_params(deep=False).items()):
        if isinstance(value, np.random.RandomState):
            value = ("RandomState", hashlib.sha1(repr(value.get_state()).encode()).hexdigest())
        items.append((name, repr(value)))
    return repr(items)


def _rows_key(rows: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rows, np.int64).tobytes()).hexdigest()


def _rows_keys(splits) -> list[str]:
    """Each fold's training rows as a key, in the order of ``splits``."""
    return [_rows_key(train) for train, _ in splits]


@dataclass
class _Fit:
    """One (candidate, fold) trained: what SoftmaxMLPClassifier.fit would have set."""

    run: dict  # as SoftmaxMLPClassifier._run returns it
    classes: np.ndarray
    n_samples: int  # the training rows (after the early-stopping split)
    seed: int
    draws: int  # minibatch orders drawn from the seed's order stream
    warning: tuple | None  # (category, message) that fit would have warned
    lines: list  # what verbose=True prints, one line per epoch
    seconds: float  # this model's share of its pack's epochs


@dataclass
class _Model:
    """One training run of a pack: a candidate on a fold, read off at each epoch count of
    the candidates that differ from it only in ``epochs`` (``ends``: epochs -> keys)."""

    h: dict
    seed: int
    rows: np.ndarray  # training rows of X
    labels: np.ndarray  # (N,) int64: the fold's class indices at those rows
    classes: np.ndarray
    val_rows: np.ndarray | None
    val_labels: np.ndarray | None
    ends: dict = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return max(self.ends)


def _fold_models(base, candidates, X, y, splits) -> dict:
    """The training runs of every (candidate, fold) pair the engine can train as fit would,
    keyed by what they share (fold, seed, dtype, batch size, order); a pair that fit would
    refuse (a bad setting, one class in the fold, ...) is left to fit itself."""
    runs, labels = {}, {}
    for cand in candidates:
        est = clone(base).set_params(**cand)
        key = _key(est)
        try:
            h = est._hyperparameters()
        except ValueError:
            continue
        if h["backend"] != "numba":
            raise ValueError(f"backend={h['backend']!r}: the search trains on the compiled "
                             "kernels; use GridSearchCV(SoftmaxMLPClassifier(backend="
                             "'numpy'), ...) for the reference")
        for f, ((train, _), rows_key) in enumerate(zip(splits, _rows_keys(splits))):
            model = _pair_model(est, h, X, y, train, f, labels)
            if model is None:
                continue
            share = (f, model.seed, h["dtype"].name, h["batch_size"], h["shuffle"],
                     h["early_stopping"], h["validation_fraction"] if h["early_stopping"]
                     else None)
            run = share + (repr(sorted((k, repr(v)) for k, v in cand.items()
                                       if k != "epochs")),)
            model = runs.setdefault(run, model)
            model.ends.setdefault(h["epochs"], []).append((key, rows_key))
    return runs


def _pair_model(est, h, X, y, train, fold, labels) -> _Model | None:
    """The training run of ``est`` on the rows ``train``, or None where fit would fail."""
    try:
        yf = est._check_targets(y[train])
    except ValueError:
        return None
    classes, codes = np.unique(yf, return_inverse=True)
    if len(classes) < 2:
        return None
    seed = est._seed()
    rows, val_rows, val_labels = train, None, None
    yi = codes.astype(np.int64)
    if h["early_stopping"]:
        try:
            tr, va, yi, val_labels = est._validation_split(
                np.arange(len(train)), yi, len(classes), h["validation_fraction"], seed)
        except ValueError:
            return None
        rows, val_rows = train[tr], train[va]
    if fold not in labels:  # the fold's classes at its rows, once per fold
        full = np.zeros(len(y), np.int64)
        full[train] = codes
        labels[fold] = full
    h = dict(h, alpha=ALPHA_AUTO / len(rows) if h["alpha"] == "auto" else h["alpha"])
    return _Model(h, seed, rows, labels[fold], classes, val_rows,
                  None if val_labels is None else np.asarray(val_labels, np.int64))


def _packs(runs: dict) -> list[list[_Model]]:
    """Runs that share their minibatch orders, PACK_SIZE at a time; the longest first."""
    groups = {}
    for key, model in runs.items():
        groups.setdefault(key[:-1], []).append(model)
    packs = []
    for models in groups.values():
        models.sort(key=lambda m: (m.h["optimizer"].name, m.h["hidden_size"]))
        packs += [models[i:i + PACK_SIZE] for i in range(0, len(models), PACK_SIZE)]
    packs.sort(key=lambda p: -max(m.epochs for m in p) * sum(m.h["hidden_size"] for m in p))
    return packs


class _Stopped(Exception):
    """The search was interrupted: a pack stops between epochs."""


class _Progress:
    """One model's fit loop (SoftmaxMLPClassifier._run), an epoch at a time."""

    def __init__(self, model: _Model, limit: float):
        self.model, self.limit = model, limit
        self.rule = FitRule(model.h, model.val_rows is not None, model.h["tol"] is not None)
        self.lines, self.seconds, self.done = [], 0.0, False

    def step(self, packed, m, loss, alive, X_val, seconds):
        """This model's next epoch ended (its loss, alive: not diverged, X_val: the
        early-stopping rows or None, seconds: its share); returns the fits that end here."""
        epoch = len(self.rule.curve) + 1
        self.seconds += seconds
        if not alive:
            return self._finish(packed, m, epoch, RuntimeWarning,
                                diverged_message(epoch, self.limit), diverged=True)
        score = None if X_val is None else kernels.evaluate(packed.params(m), X_val,
                                                            self.model.val_labels, 0.0)[1]
        stop, line = self.rule.epoch(loss, score, lambda: packed.params(m))
        self.lines.append(f"{line}, {seconds:.2f} s")
        if stop:
            return self._finish(packed, m, epoch, None, None)
        warning = ((ConvergenceWarning, unconverged_message(epoch))
                   if self.rule.stop_early and epoch > 1 else (None, None))
        self.done = epoch == self.model.epochs
        return [(k, self._fit(packed, m, epoch, *warning))
                for k in self.model.ends.get(epoch, [])]

    def _finish(self, packed, m, epoch, category, message, diverged=False):
        """The run stops at ``epoch``: every epoch count from here on ends with it."""
        self.done = True
        return [(k, self._fit(packed, m, epoch, category, message, diverged))
                for e, keys in self.model.ends.items() if e >= epoch for k in keys]

    def _fit(self, packed, m, draws, category, message, diverged=False) -> _Fit:
        model = self.model
        run = self.rule.result(lambda: packed.params(m), packed.optimizer_state(m), diverged)
        return _Fit(run, model.classes, len(model.rows), model.seed, draws,
                    None if category is None else (category, message), list(self.lines),
                    self.seconds)


def _train_pack(pack: list[_Model], data: dict, stop: threading.Event) -> list:
    """Train one pack's models as fit would, each to its last epoch count; returns
    [((candidate key, rows key), _Fit)] for every epoch count of every model."""
    first = pack[0]
    X = data[first.h["dtype"].name]
    K = len(first.classes)
    params = [init_params(X.shape[1], m.h["hidden_size"], K, seed=m.seed, dtype=m.h["dtype"])
              for m in pack]
    packed = kernels.Packed(params, [m.h["optimizer"] for m in pack])
    limits = [reference.divergence_limit(p, m.h["alpha"], K) for p, m in zip(params, pack)]
    runs = [_Progress(m, lim) for m, lim in zip(pack, limits)]
    X_val = None if first.val_rows is None else X[first.val_rows]
    order_rng = _seed_streams(first.seed)[1]
    lrs = [m.h["learning_rate"] for m in pack]
    alphas = [m.h["alpha"] for m in pack]
    out = []
    while not all(r.done for r in runs):
        if stop.is_set():
            raise _Stopped
        n = len(first.rows)
        order = first.rows[order_rng.permutation(n)] if first.h["shuffle"] else first.rows
        active = [not r.done for r in runs]
        t0 = time.perf_counter()
        losses, alive = packed.epoch(X, first.labels, order, first.h["batch_size"], lrs,
                                     alphas, limits, alive=active)
        share = (time.perf_counter() - t0) / sum(active)
        for m, r in enumerate(runs):
            if active[m]:
                out += r.step(packed, m, float(losses[m]), bool(alive[m]), X_val, share)
    return out


def train_pairs(base, candidates, X, y, splits, n_jobs: int,
                scheduler: str | None = None) -> tuple[dict, dict]:
    """Every (candidate, fold) pair the engine can train: ({(candidate key, rows key):
    _Fit}, {dtype name: X converted as fit converts it}); on ``n_jobs`` threads here, or
    on the Dask cluster ``scheduler``."""
    packs = _packs(_fold_models(base, candidates, X, np.asarray(y), splits))
    data = {}
    for dtype in {m.h["dtype"].name for pack in packs for m in pack}:
        try:
            data[dtype] = check_array(X, dtype=dtype, order="C")
        except (TypeError, ValueError):
            return {}, {}  # fit's own validation says what is wrong, pair by pair
    if scheduler is not None:
        return _train_on_cluster(packs, data, scheduler), data
    stop, fits = threading.Event(), {}
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        futures = [pool.submit(_train_pack, pack, data, stop) for pack in packs]
        try:
            for future in as_completed(futures):
                fits.update(future.result())
        except BaseException:  # Ctrl-C: every pack stops after its current epoch
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return fits, data


def _train_pack_task(pack: list[_Model], data: dict) -> list:
    """_train_pack as a task on a Dask worker (a cancelled task's result is dropped)."""
    return _train_pack(pack, data, threading.Event())


def _train_on_cluster(packs: list, data: dict, scheduler: str) -> dict:
    """The packs as tasks on the Dask cluster ``scheduler`` (``tcp://HOST:PORT``, or
    ``local:N`` worker processes started here), the data sent to each worker once,
    costliest packs first.  A worker that dies has its packs run again elsewhere; on
    Ctrl-C the packs not finished are cancelled."""
    from .sweep.cluster import ClusterError, connect, disconnect

    client, cluster = connect(scheduler, "scheduler")
    from dask.distributed import as_completed as finished

    try:
        [shared] = client.scatter([data], broadcast=True)
        futures = [client.submit(_train_pack_task, pack, shared, pure=False, retries=2,
                                 priority=len(packs) - rank)
                   for rank, pack in enumerate(packs)]
        fits = {}
        try:
            for future in finished(futures):
                fits.update(future.result())
        except BaseException as exc:
            client.cancel(futures)
            if isinstance(exc, Exception):  # KilledWorker after the retries, and the like
                raise ClusterError(f"a pack failed on the cluster: {type(exc).__name__}: "
                                   f"{exc}") from exc
            raise
        return fits
    finally:
        disconnect(client, cluster)


class _Pretrained(SoftmaxMLPClassifier):
    """The estimator scikit-learn's search loop sees: its X is a column of row indices
    into the caller's data (``_store``, a class attribute of a subclass made per search,
    which clone keeps), its fit takes a trained pair from the store, and its predictions
    read the rows it is given.  A pair not in the store (one that fit refuses, or the
    refit on all the data) is fitted for real, on the caller's rows."""

    _store: dict = {}

    def _real(self, X):
        return _safe_indexing(self._store["X"], np.asarray(X)[:, 0])

    def fit(self, X, y, **params):
        rows = np.asarray(X)[:, 0]
        got = None if params else self._store["fits"].get((_key(self), _rows_key(rows)))
        if got is None:
            return super().fit(self._real(X), y, **params)
        return self._take(got, rows, y)

    def _take(self, got: _Fit, rows, y):
        h = self._hyperparameters()
        if h["verbose"]:
            print("\n".join(got.lines), flush=True)
        if got.warning is not None:
            category, message = got.warning
            warnings.warn(message, category, stacklevel=2)
        self.n_features_in_ = self._store["n_features"]
        names = self._store["names"]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        order_rng = _seed_streams(got.seed)[1]
        for _ in range(got.draws if h["shuffle"] else 0):
            order_rng.permutation(got.n_samples)
        self._order_rng = order_rng
        return self._set_state(got.classes, (0, 0, []), dict(got.run), got.n_samples)

    def _check_X(self, X) -> np.ndarray:
        data = self._store["data"].get(self.params_.dtype.name)
        if data is None:
            return super()._check_X(self._real(X))
        return np.ascontiguousarray(data[np.asarray(X)[:, 0]])


class _EngineSearch:
    """What both searches add to scikit-learn's: the pairs trained first, on the engine."""

    def _candidates(self) -> list:
        raise NotImplementedError

    def _run_search(self, evaluate_candidates):
        evaluate_candidates(self._candidates_now)

    def fit(self, X, y=None, *, groups=None, **params):
        """Train every candidate on every fold of X (n_samples, n_features), y (n_samples,),
        score each on its test fold, and refit the best on all of X (``refit``).
        Returns self, with scikit-learn's search attributes (``cv_results_``,
        ``best_params_``, ``best_estimator_``, ...)."""
        base = SoftmaxMLPClassifier() if self.estimator is None else self.estimator
        if not isinstance(base, SoftmaxMLPClassifier):
            raise TypeError(f"estimator must be a SoftmaxMLPClassifier, got {base!r}")
        X, y, groups = indexable(X, y, groups)
        splits = list(check_cv(self.cv, y, classifier=True).split(X, y, groups))
        self._candidates_now = candidates = self._candidates()
        for cand in candidates:  # an unknown name: scikit-learn's own error, at once
            clone(base).set_params(**cand)
        n_jobs = _threads(self.n_jobs)
        if self.scheduler is not None:
            from .sweep.cluster import parse_scheduler
            parse_scheduler(self.scheduler, "scheduler")  # a bad address: before any work
        fits, data = (train_pairs(base, candidates, X, y, splits, n_jobs, self.scheduler)
                      if params == {} else ({}, {}))
        store = dict(X=X, fits=fits, n_features=X.shape[1], names=_get_feature_names(X),
                     data=data)
        proxy = type("SoftmaxMLPClassifier", (_Pretrained,), {"_store": store})
        saved = self.estimator, self.cv, self.n_jobs
        self.estimator = proxy(**base.get_params(deep=False))
        self.cv, self.n_jobs = splits, None
        try:
            super().fit(np.arange(len(y), dtype=np.int64)[:, None], y, groups=groups,
                        **params)
        finally:
            self.estimator, self.cv, self.n_jobs = saved
            del self._candidates_now
        self._after_fit(base, fits, splits)
        return self

    def _after_fit(self, base, fits, splits):
        """The refitted estimator as a plain SoftmaxMLPClassifier, and the fit times of the
        pairs trained here: each model's share of its pack's epochs."""
        if hasattr(self, "best_estimator_"):
            plain = clone(base).set_params(**self.best_params_)
            plain.__dict__.update(self.best_estimator_.__dict__)
            self.best_estimator_ = plain
        res, rows_keys = self.cv_results_, _rows_keys(splits)
        for i, params in enumerate(res["params"]):
            key = _key(clone(base).set_params(**params))
            times = [fits[(key, r)].seconds for r in rows_keys if (key, r) in fits]
            if len(times) == len(splits):
                res["mean_fit_time"][i], res["std_fit_time"][i] = np.mean(times), np.std(times)


def _threads(n_jobs) -> int:
    """n_jobs as threads: None means every CPU this process may use, -1 too, -2 all but
    one, as joblib counts."""
    cpus = available_cpus().count
    if n_jobs is None:
        return cpus
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a nonzero int or None, got {n_jobs!r}")
    return int(n_jobs) if n_jobs > 0 else max(1, cpus + 1 + int(n_jobs))


class SoftmaxMLPGridSearchCV(_EngineSearch, GridSearchCV):
    """``GridSearchCV(SoftmaxMLPClassifier(), param_grid)`` on fastsoftmax's engine: the same
    arguments (the estimator implied, so the grid comes first; ``estimator`` gives the
    settings every candidate inherits), the same attributes and results (see the module
    docstring for how), ``n_jobs`` threads (default: every CPU this process may use), or
    ``scheduler``: the pairs trained on a Dask cluster instead (``tcp://HOST:PORT`` of a
    running scheduler, or ``local:N`` to start N worker processes here; needs
    fastsoftmax[dask]), with the same results."""

    def __init__(self, param_grid, *, estimator=None, scoring=None, n_jobs=None, refit=True,
                 cv=None, verbose=0, pre_dispatch="2*n_jobs", error_score=np.nan,
                 return_train_score=False, scheduler=None):
        super().__init__(estimator, param_grid, scoring=scoring, n_jobs=n_jobs, refit=refit,
                         cv=cv, verbose=verbose, pre_dispatch=pre_dispatch,
                         error_score=error_score, return_train_score=return_train_score)
        self.scheduler = scheduler

    def _candidates(self) -> list:
        return list(ParameterGrid(self.param_grid))


class SoftmaxMLPRandomizedSearchCV(_EngineSearch, RandomizedSearchCV):
    """``RandomizedSearchCV(SoftmaxMLPClassifier(), param_distributions)`` on fastsoftmax's
    engine: the candidates drawn by scikit-learn's ParameterSampler, so a ``random_state``
    gives RandomizedSearchCV's; otherwise as :class:`SoftmaxMLPGridSearchCV`."""

    def __init__(self, param_distributions, *, n_iter=10, estimator=None, scoring=None,
                 n_jobs=None, refit=True, cv=None, verbose=0, pre_dispatch="2*n_jobs",
                 random_state=None, error_score=np.nan, return_train_score=False,
                 scheduler=None):
        super().__init__(estimator, param_distributions, n_iter=n_iter, scoring=scoring,
                         n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
                         pre_dispatch=pre_dispatch, random_state=random_state,
                         error_score=error_score, return_train_score=return_train_score)
        self.scheduler = scheduler

    def _candidates(self) -> list:
        return list(ParameterSampler(self.param_distributions, self.n_iter,
                                     random_state=self.random_state))
