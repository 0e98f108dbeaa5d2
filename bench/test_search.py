"""Hyperparameter searches on a user's own data: the engine's grid search against the
searches a scikit-learn user writes, wall time of ``fit`` on both cores, one run each.

The same grid (24 candidates x 3 epoch counts = 72 settings) and the same 5 folds for
every search, on three data sets: scikit-learn's digits (1,797 x 64), a
make_classification of 20,000 x 40 with 5 classes, and the first 10,000 real
Fashion-MNIST training images.  The peers, as their users write them, n_jobs=2:

- ``SoftmaxMLPGridSearchCV(grid)``: fastsoftmax's search (threads, packs, epoch counts
  shared);
- ``GridSearchCV(SoftmaxMLPClassifier(), grid)``: the same model through scikit-learn's
  search (joblib processes, one fit per candidate and fold);
- ``GridSearchCV(MLPClassifier(), grid)``: scikit-learn's own network, the same settings
  (Adam, batch 64, every epoch run: tol=0 and n_iter_no_change beyond the epochs; its L2
  term is divided by the batch size, so its alpha is ours times the batch);
- ``HalvingGridSearchCV(MLPClassifier(), grid)``: scikit-learn's successive halving
  (experimental), samples as the resource, factor 3.

Each records its best parameters and best score (extra_info).  ``bench/report.py`` does
not read this group; docs/speed.md has the table of the last run.
"""

import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the searches need scikit-learn")
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

B = 64
GRID = {"hidden_size": [32, 64], "learning_rate": [1e-3, 3e-3, 1e-2],
        "alpha": [1e-5, 1e-4, 1e-3, 1e-2], "epochs": [5, 10, 20]}
CV = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
SEARCHES = ("fastsoftmax", "gridsearchcv-softmax", "gridsearchcv-mlp", "halving-mlp")


@pytest.fixture(scope="module", params=["digits", "classification", "fashion"])
def dataset(request):
    if request.param == "digits":
        X, y = load_digits(return_X_y=True)
        return request.param, (X / 16.0).astype(np.float32), y
    if request.param == "classification":
        X, y = make_classification(n_samples=20000, n_features=40, n_informative=20,
                                   n_classes=5, random_state=0)
        return request.param, X.astype(np.float32), y
    real_data = request.getfixturevalue("real_data")  # skips, saying why, where it is absent
    X = real_data.train_images[:10000] / np.float32(255)
    return request.param, X, real_data.train_labels[:10000]


def _mlp_grid():
    """GRID in MLPClassifier's names and units."""
    return {"hidden_layer_sizes": [(h,) for h in GRID["hidden_size"]],
            "learning_rate_init": GRID["learning_rate"],
            "alpha": [a * B for a in GRID["alpha"]], "max_iter": GRID["epochs"]}


def _search(name):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV
    from sklearn.neural_network import MLPClassifier

    from fastsoftmax import SoftmaxMLPClassifier, SoftmaxMLPGridSearchCV

    ours = SoftmaxMLPClassifier(batch_size=B, tol=None, random_state=0)
    mlp = MLPClassifier(solver="adam", batch_size=B, tol=0.0,
                        n_iter_no_change=np.iinfo(np.int32).max, random_state=0)
    if name == "fastsoftmax":
        return SoftmaxMLPGridSearchCV(GRID, estimator=ours, cv=CV, n_jobs=2)
    if name == "gridsearchcv-softmax":
        return GridSearchCV(ours, GRID, cv=CV, n_jobs=2)
    if name == "gridsearchcv-mlp":
        return GridSearchCV(mlp, _mlp_grid(), cv=CV, n_jobs=2)
    return HalvingGridSearchCV(mlp, _mlp_grid(), cv=CV, n_jobs=2, factor=3, random_state=0)


@pytest.mark.parametrize("name", SEARCHES)
def test_search(benchmark, dataset, name):
    data_name, X, y = dataset
    if name == "fastsoftmax":  # compile the kernels outside the timing, as a second run
        _search(name).set_params(param_grid={"epochs": [1]}).fit(X[:200], y[:200])
    search = _search(name)
    benchmark.group = f"search, {data_name} {X.shape[0]} x {X.shape[1]}, 72 settings x 5 folds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the epoch count
        benchmark.pedantic(search.fit, args=(X, y), rounds=1, iterations=1)
    benchmark.extra_info["best_params"] = {k: (list(v) if isinstance(v, tuple) else v)
                                           for k, v in search.best_params_.items()}
    benchmark.extra_info["best_score"] = float(search.best_score_)
