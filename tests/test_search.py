"""The searches on the engine against scikit-learn's own searches of SoftmaxMLPClassifier:
the same candidates, scores, ranks, best parameters and refitted weights, and the same
cv_results_ table."""

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the searches need scikit-learn "
                              "(fastsoftmax[sklearn], part of fastsoftmax[test])")

from scipy.stats import loguniform  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import FitFailedWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedKFold  # noqa: E402

import fastsoftmax as fs  # noqa: E402
from fastsoftmax import search  # noqa: E402
from fastsoftmax.estimator import SoftmaxMLPClassifier  # noqa: E402

from helpers import same_estimators, same_results  # noqa: E402

pd = pytest.importorskip("pandas", reason="cv_results_ as a DataFrame needs pandas "
                         "(part of fastsoftmax[test])")

@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=240, n_features=12, n_informative=8, n_classes=3,
                               random_state=0)
    return X, np.array(["ant", "bee", "cat"])[y]  # any label values


def fit_both(ours, theirs, X, y):
    with warnings.catch_warnings(record=True) as w_ours:
        warnings.simplefilter("always")
        ours.fit(X, y)
    with warnings.catch_warnings(record=True) as w_theirs:
        warnings.simplefilter("always")
        theirs.fit(X, y)
    return sorted(str(w.message) for w in w_ours), sorted(str(w.message) for w in w_theirs)


GRID = {"hidden_size": [4, 9], "learning_rate": [0.02, 1e3], "epochs": [2, 5, 8],
        "optimizer": ["adam", "sgd"]}


def test_grid_search_is_gridsearchcv(data):
    """Stopping rule (n_iter_no_change=2), divergence (lr 1e3), epoch counts read off one
    run, packs of both rules: the scores, ranks, weights and warnings of GridSearchCV."""
    X, y = data
    est = SoftmaxMLPClassifier(random_state=0, n_iter_no_change=2, tol=1e-3, batch_size=16)
    cv = StratifiedKFold(3, shuffle=True, random_state=1)
    ours = search.SoftmaxMLPGridSearchCV(GRID, estimator=est, cv=cv, n_jobs=2)
    theirs = GridSearchCV(est, GRID, cv=cv)
    w_ours, w_theirs = fit_both(ours, theirs, X, y)
    same_results(ours, theirs)
    same_estimators(ours.best_estimator_, theirs.best_estimator_)
    assert w_ours == w_theirs and any("diverged" in w for w in w_ours)
    assert ours.n_splits_ == 3 and list(ours.classes_) == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_early_stopping_float64_and_several_scores(data):
    X, y = data
    est = SoftmaxMLPClassifier(random_state=3, early_stopping=True, n_iter_no_change=2,
                               dtype="float64", batch_size=32)
    grid = {"hidden_size": [5, 8], "epochs": [3, 6], "alpha": ["auto", 1e-2]}
    scoring = {"acc": "accuracy", "nll": "neg_log_loss"}
    ours = search.SoftmaxMLPGridSearchCV(grid, estimator=est, cv=4, scoring=scoring,
                                         refit="nll", return_train_score=True)
    theirs = GridSearchCV(est, grid, cv=4, scoring=scoring, refit="nll",
                          return_train_score=True)
    fit_both(ours, theirs, X, y)
    same_results(ours, theirs)
    same_estimators(ours.best_estimator_, theirs.best_estimator_)
    assert ours.multimetric_ and "mean_train_nll" in ours.cv_results_


def test_randomized_search_draws_randomizedsearchcvs_candidates(data):
    X, y = data
    est = SoftmaxMLPClassifier(random_state=0, epochs=4, tol=None)
    dists = {"learning_rate": loguniform(1e-4, 1e-1), "hidden_size": [3, 6, 9],
             "optimizer": ["adam", "momentum"]}
    ours = search.SoftmaxMLPRandomizedSearchCV(dists, n_iter=6, estimator=est, cv=3,
                                               random_state=7)
    theirs = RandomizedSearchCV(est, dists, n_iter=6, cv=3, random_state=7)
    fit_both(ours, theirs, X, y)
    same_results(ours, theirs)
    same_estimators(ours.best_estimator_, theirs.best_estimator_)


def test_the_same_whatever_the_threads(data):
    X, y = data
    est = SoftmaxMLPClassifier(random_state=2, epochs=3, tol=None)
    grid = {"hidden_size": [3, 5, 7, 9, 11], "learning_rate": [1e-3, 1e-2]}
    one = search.SoftmaxMLPGridSearchCV(grid, estimator=est, cv=3, n_jobs=1).fit(X, y)
    two = search.SoftmaxMLPGridSearchCV(grid, estimator=est, cv=3, n_jobs=2).fit(X, y)
    same_results(one, two)


def test_candidates_train_in_packs_and_epoch_counts_share_a_run(data, monkeypatch):
    X, y = data
    calls = []
    epoch = fs.kernels.Packed.epoch

    def counted(self, *args, **kwargs):
        calls.append(len(self.offs))
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(fs.kernels.Packed, "epoch", counted)
    est = SoftmaxMLPClassifier(random_state=0, tol=None)
    grid = {"hidden_size": [4, 8], "learning_rate": [1e-3, 1e-2], "epochs": [2, 4]}
    search.SoftmaxMLPGridSearchCV(grid, estimator=est, cv=3, refit=False).fit(X, y)
    # 4 runs a fold (the epoch counts share one) in one pack of 4, 4 epochs: 12 calls, where
    # the pairs one at a time take (2 + 4) x 4 x 3 = 72
    assert calls == [4] * 12


@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_a_candidate_fit_refuses_gets_the_error_score(data):
    X, y = data
    grid = {"hidden_size": [0, 4]}
    est = SoftmaxMLPClassifier(random_state=0, epochs=2, tol=None)
    with pytest.warns(FitFailedWarning, match="hidden_size"):
        ours = search.SoftmaxMLPGridSearchCV(grid, estimator=est, cv=3).fit(X, y)
    assert np.isnan(ours.cv_results_["mean_test_score"][0])
    assert ours.best_params_ == {"hidden_size": 4}


def test_unknown_parameter_and_reference_backend_are_refused(data):
    X, y = data
    with pytest.raises(ValueError, match="Invalid parameter 'depth'"):
        search.SoftmaxMLPGridSearchCV({"depth": [1, 2]}, cv=3).fit(X, y)
    with pytest.raises(ValueError, match="backend='numpy'"):
        search.SoftmaxMLPGridSearchCV({"backend": ["numpy"]}, cv=3).fit(X, y)
    with pytest.raises(TypeError, match="must be a SoftmaxMLPClassifier"):
        search.SoftmaxMLPGridSearchCV({"C": [1]}, estimator=object()).fit(X, y)


def test_the_searches_are_exported():
    assert fs.SoftmaxMLPGridSearchCV is search.SoftmaxMLPGridSearchCV
    assert fs.SoftmaxMLPRandomizedSearchCV is search.SoftmaxMLPRandomizedSearchCV


# A search long enough to be interrupted: each pack trains for tens of seconds.  It says
# on stderr when the first epoch starts, and what the interrupt left behind.
_INTERRUPTED_SEARCH = """
import sys, threading, time
import numpy as np
from sklearn.datasets import make_classification
from fastsoftmax import SoftmaxMLPClassifier, SoftmaxMLPGridSearchCV, kernels

real = kernels.Packed.epoch
def epoch(self, *args, **kwargs):
    sys.stderr.write("training\\n")
    sys.stderr.flush()
    return real(self, *args, **kwargs)
kernels.Packed.epoch = epoch

X, y = make_classification(n_samples=3000, n_features=100, n_informative=20, n_classes=4,
                           random_state=0)
search = SoftmaxMLPGridSearchCV({"learning_rate": [1e-3, 3e-3]}, cv=2, n_jobs=2,
                                estimator=SoftmaxMLPClassifier(hidden_size=256, epochs=3000,
                                                               tol=None, random_state=0))
try:
    search.fit(X, y)
except KeyboardInterrupt:
    # the pool's threads have stopped (they finish the epoch under way), no result is set
    print("KeyboardInterrupt", threading.active_count(), hasattr(search, "cv_results_"))
"""


def test_ctrl_c_stops_the_search_after_the_epoch_under_way():
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_SEARCH], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr.readline() == "training\n", proc.stderr.read()
        time.sleep(0.2)  # every pack is training now
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=120)
        delay = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.split() == ["KeyboardInterrupt", "1", "False"], (out, err)
    # an epoch of a pack takes milliseconds; the packs' remaining epochs, about 20 s
    assert delay < 10, delay


def test_a_bad_scheduler_is_refused_before_any_training(data, monkeypatch):
    monkeypatch.setattr(search, "_train_pack", None)  # training would fail differently
    for bad, message in (("somehost:8786", "scheduler 'somehost:8786': expected"),
                         ("local:0", "scheduler 'local:0': local:N needs")):
        with pytest.raises(ValueError, match=message):
            fs.SoftmaxMLPGridSearchCV({"epochs": [1]}, scheduler=bad).fit(*data)
