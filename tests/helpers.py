"""What the tests share besides fixtures: tolerances, comparisons, data makers, arguments."""

import numpy as np

import fastsoftmax as fs

# Agreement tolerances, named for the dtype (relative to the largest entry).
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-30)
    return float(np.abs(a - b).max() / scale)


def assert_params_close(p, q, dtype):
    for name, a, b in zip(fs.Params._fields, p, q):
        assert a.shape == b.shape, name
        assert rel_err(a, b) <= RTOL[np.dtype(dtype)], (name, rel_err(a, b))


def make_data(n, n_features=784, n_classes=10, seed=0, dtype=np.float64):
    """Images-like data: half the pixels zero, the rest in (0, 1]; labels
    depend on the pixels so training has something to learn."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_features)) * (rng.random((n, n_features)) < 0.5)
    proj = rng.standard_normal((n_features, n_classes))
    y = (X @ proj).argmax(axis=1)
    return X.astype(dtype), y.astype(np.int64)


# A four-configuration grid on 500 images of data_dir: the command line in seconds.
SMALL_ARGS = ["--batch-sizes", "16,64", "--learning-rates", "0.1", "--epochs", "1,2",
              "--alphas", "1e-3", "--hidden-sizes", "5", "--limit", "500"]


# What the searches' engine timing replaces; everything else in cv_results_ must be
# scikit-learn's, value for value.
SEARCH_TIMES = ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")


def same_results(ours, theirs):
    """Two fitted searches' cv_results_ (as DataFrames, the times aside) and choices equal."""
    import pandas as pd

    a, b = pd.DataFrame(ours.cv_results_), pd.DataFrame(theirs.cv_results_)
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    keep = [c for c in a.columns if c not in SEARCH_TIMES]
    pd.testing.assert_frame_equal(a[keep], b[keep])
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_score_ == theirs.best_score_ or np.isnan(ours.best_score_)


def same_estimators(a, b):
    """Two fitted SoftmaxMLPClassifiers: the same settings, weights bit for bit, curves."""
    from fastsoftmax import SoftmaxMLPClassifier

    assert type(a) is SoftmaxMLPClassifier and a.get_params() == b.get_params()
    for x, y in zip(a.params_, b.params_):
        np.testing.assert_array_equal(x, y)
    assert a.loss_curve_ == b.loss_curve_ and a.n_iter_ == b.n_iter_
