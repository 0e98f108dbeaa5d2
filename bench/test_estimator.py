"""Fit time of the drop-in estimator against MLPClassifier with matching settings.

The documented configuration (README, "A scikit-learn estimator") on the 60,000 real
training images scaled to [0, 1], one BLAS thread.  MLPClassifier's L2 term is divided
by the batch size, so its alpha is ours times the batch; plain SGD (momentum off); every
epoch run.  (bench/defaults.py compares the two estimators' defaults.)
"""

import warnings

import numpy as np
import pytest

H, B, LR, EPOCHS, ALPHA = 128, 32, 0.1, 10, 1e-4


@pytest.fixture(scope="module")
def scaled(train_set):
    return train_set  # float32 in [0, 1]: bench/conftest.py


def _fit(benchmark, make, X, y, test_set):
    clf = make()
    benchmark.group = "estimator fit, 60,000 images, 10 epochs"
    benchmark.pedantic(clf.fit, args=(X, y), rounds=1, iterations=1)
    benchmark.extra_info["train_accuracy"] = float(clf.score(X[:10000], y[:10000]))
    benchmark.extra_info["test_accuracy"] = float(clf.score(*test_set))


def test_fit_fastsoftmax(benchmark, scaled, test_set, one_thread):
    sk = pytest.importorskip("sklearn", reason="the estimator needs scikit-learn")
    del sk
    from fastsoftmax import SoftmaxMLPClassifier

    X, y = scaled
    make = lambda: SoftmaxMLPClassifier(hidden_size=H, batch_size=B, learning_rate=LR,  # noqa: E731
                                        epochs=EPOCHS, alpha=ALPHA, random_state=0, tol=None,
                                        optimizer="sgd")
    make().fit(X[:500], y[:500])  # compile outside the timing
    _fit(benchmark, make, X, y, test_set)


def test_fit_mlpclassifier(benchmark, scaled, test_set, one_thread):
    nn = pytest.importorskip("sklearn.neural_network", reason="scikit-learn is not installed")
    X, y = scaled

    def make():
        return nn.MLPClassifier(hidden_layer_sizes=(H,), solver="sgd", batch_size=B,
                                learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False,
                                alpha=ALPHA * B, max_iter=EPOCHS, tol=0.0,
                                n_iter_no_change=np.iinfo(np.int32).max, shuffle=True,
                                random_state=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the epoch count here
        _fit(benchmark, make, X, y, test_set)
