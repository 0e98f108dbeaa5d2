"""SoftmaxMLPClassifier: scikit-learn's own estimator checks, the workflows it
must fit into, and agreement with fs.train."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is the optional extra "
                              "fastsoftmax[sklearn] (installed by fastsoftmax[test])")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastsoftmax as fs  # noqa: E402
from fastsoftmax import SoftmaxMLPClassifier  # noqa: E402

from helpers import make_data  # noqa: E402
from test_train import NOT_A_MODEL, _not_a_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([SoftmaxMLPClassifier(random_state=0),
                          SoftmaxMLPClassifier(random_state=0, dtype="float64",
                                               early_stopping=True)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def small(n=600, n_features=20, n_classes=4, seed=0):
    return make_data(n, n_features, n_classes, seed=seed)


def test_same_weights_as_train():
    X, y = small()
    kw = dict(hidden_size=16, batch_size=32, learning_rate=0.1, epochs=4, alpha=1e-3,
              optimizer="sgd")
    clf = SoftmaxMLPClassifier(**kw, random_state=7, tol=None).fit(X, y)
    ref = fs.train(X, y, **kw, seed=7, n_classes=4)
    for got, want in zip(clf.coefs_ + clf.intercepts_, (ref.params.W1, ref.params.W2,
                                                         ref.params.b1, ref.params.b2)):
        np.testing.assert_array_equal(got, want)
    assert clf.loss_curve_ == ref.history.train_loss
    assert clf.n_iter_ == 4 and clf.t_ == 4 * len(X)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_same_weights_as_train_with_an_optimizer(optimizer):
    X, y = small()
    kw = dict(hidden_size=16, batch_size=32, learning_rate=0.01, epochs=3, alpha=1e-3,
              optimizer=optimizer, nesterov=optimizer == "momentum", beta2=0.99)
    clf = SoftmaxMLPClassifier(**kw, random_state=7, tol=None).fit(X, y)
    ref = fs.train(X, y, **kw, seed=7, n_classes=4)
    for a, b in zip(clf.params_, ref.params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_partial_fit_epochs_equal_fit(optimizer):
    """partial_fit carries the optimiser's state (velocity, moments, step count)
    from call to call, so three calls are three epochs of one fit."""
    X, y = small()
    kw = dict(optimizer=optimizer, learning_rate=0.01)
    fitted = SoftmaxMLPClassifier(random_state=3, epochs=3, tol=None, **kw).fit(X, y)
    inc = SoftmaxMLPClassifier(random_state=3, **kw)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.arange(4))
    np.testing.assert_array_equal(inc.coefs_[0], fitted.coefs_[0])
    np.testing.assert_array_equal(inc.intercepts_[1], fitted.intercepts_[1])
    assert inc.n_iter_ == 3 and inc.loss_curve_ == fitted.loss_curve_


def test_partial_fit_needs_classes_and_keeps_them():
    X, y = small()
    clf = SoftmaxMLPClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2, 3])  # not every class in a batch
    assert clf.predict_proba(X).shape == (len(X), 4)
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X, y + 10)
    with pytest.raises(ValueError, match="differs"):
        clf.partial_fit(X, y, classes=[0, 1])


@pytest.mark.parametrize("labels", [np.array(["coat", "bag", "shirt", "dress"]),
                                    np.array([-5, 3, 100, 7])])
def test_any_label_type(labels):
    X, y = small()
    clf = SoftmaxMLPClassifier(random_state=0, learning_rate=0.2).fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(X)
    assert set(pred) <= set(labels)
    assert clf.score(X, labels[y]) > 0.5
    # predict is the argmax of predict_proba, in the order of classes_
    np.testing.assert_array_equal(pred, clf.classes_[clf.predict_proba(X).argmax(1)])


def test_binary_and_many_features():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 1000))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = SoftmaxMLPClassifier(random_state=0, epochs=30).fit(X, y)
    assert clf.predict_proba(X).shape == (300, 2)
    assert clf.score(X, y) > 0.9


def test_early_stopping_records_and_keeps_best():
    X, y = small(n=1000)
    clf = SoftmaxMLPClassifier(random_state=0, early_stopping=True, epochs=40,
                               n_iter_no_change=3, tol=0.0, learning_rate=0.5).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(scores)
    assert clf.best_loss_ is None
    # it stopped because the score went 3 epochs without a gain, not at epochs=40
    assert clf.n_iter_ < 40 and max(scores[-3:]) <= max(scores[:-3])


def test_tol_stops_on_training_loss():
    X, y = small()
    clf = SoftmaxMLPClassifier(random_state=0, epochs=200, n_iter_no_change=2,
                               tol=10.0).fit(X, y)
    # the first epoch improves on "nothing yet"; no later one can gain 10 nats
    assert clf.n_iter_ == 3
    assert clf.validation_scores_ is None and clf.best_loss_ == min(clf.loss_curve_)


def test_warm_start_continues():
    X, y = small()
    clf = SoftmaxMLPClassifier(random_state=0, epochs=2, tol=None, warm_start=True)
    clf.fit(X, y)
    first = clf.coefs_[0].copy()
    clf.fit(X, y)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    assert not np.array_equal(first, clf.coefs_[0])
    cold = SoftmaxMLPClassifier(random_state=0, epochs=2, tol=None).fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], first)


def test_pickle_and_save_load_predict_identically(tmp_path):
    pd = pytest.importorskip("pandas", reason="feature_names_in_ needs a DataFrame (pandas)")
    X, y = small()
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
    labels = np.array(["a", "b", "c", "d"], dtype=object)[y]
    clf = SoftmaxMLPClassifier(random_state=0).fit(frame, labels)
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)

    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(frame), clf.predict_proba(frame))

    clf.save(tmp_path / "model.npz")
    loaded = SoftmaxMLPClassifier.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert loaded.get_params() == clf.get_params()
    assert loaded.loss_curve_ == clf.loss_curve_ and loaded.n_iter_ == clf.n_iter_
    # partial_fit continues the same minibatch orders after a round trip
    clf.partial_fit(frame, labels)
    loaded.partial_fit(frame, labels)
    np.testing.assert_array_equal(loaded.coefs_[0], clf.coefs_[0])


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_partial_fit_after_load_continues_the_optimizer_exactly(tmp_path, optimizer):
    X, y = small()
    clf = SoftmaxMLPClassifier(optimizer=optimizer, learning_rate=0.01, epochs=2, tol=None,
                               random_state=1).fit(X, y)
    clf.save(tmp_path / "model.npz")
    loaded = SoftmaxMLPClassifier.load(tmp_path / "model.npz")
    assert loaded._optimizer_state.step == clf._optimizer_state.step == 2 * 10  # 600 / 64
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    for a, b in zip(loaded.params_, clf.params_):
        np.testing.assert_array_equal(a, b)
    # changing the rule (set_params) starts its state afresh rather than misreading it
    loaded.set_params(optimizer="sgd").partial_fit(X, y)
    assert loaded._optimizer_state.step == 10 and loaded._optimizer_state.slots == []


def test_a_file_from_before_the_optimizers_loads_as_sgd(tmp_path):
    """Version 1 files hold plain-SGD models without optimiser state."""
    X, y = small()
    clf = SoftmaxMLPClassifier(optimizer="sgd", hidden_size=5, epochs=2, tol=None,
                               random_state=0).fit(X, y)
    clf.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    meta["format"] = "fastsoftmax.SoftmaxMLPClassifier/1"
    for key in ("optimizer", "optimizer_step", "alpha_"):
        del meta[key]
    meta["hyperparameters"]["alpha"] = clf.alpha_  # version 1 had no "auto"
    for key in ("optimizer", "momentum", "nesterov", "beta1", "beta2", "epsilon"):
        del meta["hyperparameters"][key]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = SoftmaxMLPClassifier.load(tmp_path / "v1.npz")
    assert loaded.optimizer == "sgd"
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    loaded.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.coefs_[0], clf.coefs_[0])


def test_load_refuses_a_model_without_its_optimizer_state(tmp_path):
    X, y = small()
    SoftmaxMLPClassifier(optimizer="adam", hidden_size=5, epochs=1,
                         random_state=0).fit(X, y).save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as f:
        arrays = {k: v for k, v in f.items() if not k.startswith("optimizer_slot1")}
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(ValueError, match="cut.npz: not a SoftmaxMLPClassifier file "
                                         r"\(optimizer 'adam' needs its state"):
        SoftmaxMLPClassifier.load(tmp_path / "cut.npz")


def test_load_rejects_other_files(tmp_path):
    X, y = small()
    fs.save_params(tmp_path / "params.npz", fs.init_params(20, 4, 4))
    with pytest.raises(ValueError, match="not a SoftmaxMLPClassifier file"):
        SoftmaxMLPClassifier.load(tmp_path / "params.npz")


@pytest.mark.parametrize("kind", NOT_A_MODEL + ["bad meta", "old meta"])
def test_load_refuses_a_file_that_is_not_a_model(tmp_path, kind):
    if kind in ("bad meta", "old meta"):
        clf = SoftmaxMLPClassifier(hidden_size=3, epochs=1, random_state=0).fit(*small())
        clf.save(tmp_path / "model.npz")
        with np.load(tmp_path / "model.npz") as f:
            arrays = dict(f)
        meta = json.loads(str(arrays["meta"]))
        del meta["n_iter_"]
        arrays["meta"] = np.array("{oops" if kind == "bad meta" else json.dumps(meta))
        path = tmp_path / "edited.npz"
        np.savez(path, **arrays)
    else:
        path = _not_a_model(tmp_path, kind)
    with pytest.raises(ValueError) as info:
        SoftmaxMLPClassifier.load(path)
    assert str(info.value).startswith(f"{path}: not a SoftmaxMLPClassifier file (")
    assert "allow_pickle" not in str(info.value)


def test_a_read_only_X_compiles_nothing_more():
    """joblib hands GridSearchCV's workers large arrays as read-only memmaps: the
    estimator must train and predict on them with the kernels it already has."""
    from fastsoftmax.kernels import epoch, evaluation

    X, y = make_data(60, n_features=7, dtype=np.float32)
    clf = SoftmaxMLPClassifier(hidden_size=5, epochs=2, tol=None, random_state=0).fit(X, y)
    clf.predict(X)
    kernels = (epoch._train_epoch_sgd, epoch._train_epoch_many, evaluation._forward_blocks)
    before = [len(k.overloads) for k in kernels]
    frozen = X.copy()
    frozen.flags.writeable = False
    again = SoftmaxMLPClassifier(hidden_size=5, epochs=2, tol=None, random_state=0)
    np.testing.assert_array_equal(again.fit(frozen, y).predict(frozen), clf.predict(X))
    again.partial_fit(frozen, y)
    assert [len(k.overloads) for k in kernels] == before


def test_sklearn_workflows():
    X, y = small(n=400)
    pipe = make_pipeline(StandardScaler(), SoftmaxMLPClassifier(random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.6

    scores = cross_val_score(SoftmaxMLPClassifier(random_state=0), X, y, cv=3)
    assert scores.shape == (3,) and (scores > 0.4).all()

    search = GridSearchCV(SoftmaxMLPClassifier(random_state=0, epochs=5),
                          {"learning_rate": [1e-4, 0.2], "hidden_size": [8, 16]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["learning_rate"] == 0.2  # 1e-4 barely moves in 5 epochs
    assert len(search.cv_results_["params"]) == 4

    c = clone(SoftmaxMLPClassifier(hidden_size=7, alpha=0.5))
    assert c.get_params()["hidden_size"] == 7 and not hasattr(c, "coefs_")


def test_verbose_prints_a_line_per_epoch(capsys):
    X, y = small()
    SoftmaxMLPClassifier(random_state=0, epochs=3, tol=None, verbose=True,
                         early_stopping=True).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert all(l.startswith(f"epoch {i + 1}: loss ") and "validation score" in l
               and l.endswith(" s") for i, l in enumerate(lines))


def test_divergence_warns_and_keeps_finite_weights():
    X, y = small()
    with pytest.warns(RuntimeWarning, match="diverged in epoch 1"):
        clf = SoftmaxMLPClassifier(random_state=0, learning_rate=1e3, alpha=1.0).fit(X, y)
    assert clf.diverged_
    assert all(np.isfinite(w).all() for w in clf.coefs_ + clf.intercepts_)
    assert clf.n_iter_ == len(clf.loss_curve_) == 0  # it blew up within the first epoch


def test_divergence_with_the_default_alpha_is_the_same_rule_as_train():
    X, y = small()
    with pytest.warns(RuntimeWarning, match="diverged in epoch 1"):
        clf = SoftmaxMLPClassifier(random_state=0, learning_rate=1e3, tol=None).fit(X, y)
    ref = fs.train(X, np.searchsorted(clf.classes_, y), hidden_size=clf.hidden_size,
                   batch_size=clf.batch_size, learning_rate=1e3, epochs=clf.epochs,
                   alpha=clf.alpha_, seed=0, n_classes=len(clf.classes_),
                   optimizer=clf.optimizer)
    assert clf.diverged_ and ref.diverged
    for a, b in zip(clf.params_, ref.params):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("param, value", [
    ("hidden_size", 0), ("batch_size", 0), ("learning_rate", 0.0), ("learning_rate", np.inf),
    ("epochs", 0), ("alpha", -1.0), ("dtype", "int32"), ("backend", "cuda"),
    ("validation_fraction", 1.0), ("n_iter_no_change", 0), ("tol", -1.0),
    ("shuffle", "yes"), ("random_state", "seed"), ("optimizer", "rmsprop"),
    ("momentum", 1.0), ("nesterov", 1), ("beta1", -0.1), ("beta2", 1.0), ("epsilon", 0.0),
])
def test_bad_hyperparameters_name_the_parameter(param, value):
    X, y = small()
    with pytest.raises(ValueError, match=param):
        SoftmaxMLPClassifier(**{param: value}).fit(X, y)


def test_alpha_auto_is_two_over_the_training_samples(tmp_path):
    X, y = small()
    clf = SoftmaxMLPClassifier(epochs=2, tol=None, random_state=0).fit(X, y)
    assert clf.alpha == "auto" and clf.alpha_ == 2 / 600
    ref = fs.train(X, y, hidden_size=100, batch_size=64, learning_rate=1e-3, epochs=2,
                   alpha=2 / 600, seed=0, n_classes=4, optimizer="adam")
    for a, b in zip(clf.params_, ref.params):
        np.testing.assert_array_equal(a, b)
    stopped = SoftmaxMLPClassifier(epochs=2, tol=None, random_state=0,
                                   early_stopping=True).fit(X, y)
    assert stopped.alpha_ == 2 / 540  # the samples it trains on, after the split
    inc = SoftmaxMLPClassifier(random_state=0).partial_fit(X[:100], y[:100], classes=range(4))
    inc.partial_fit(X, y)  # the first call's value is kept
    assert inc.alpha_ == 2 / 100
    clf.save(tmp_path / "m.npz")
    assert SoftmaxMLPClassifier.load(tmp_path / "m.npz").alpha_ == clf.alpha_
    with pytest.raises(ValueError, match="alpha must be a real number"):
        SoftmaxMLPClassifier(alpha="none").fit(X, y)


def test_bad_input_and_nothing_half_fitted():
    X, y = small()
    with pytest.raises(NotFittedError):
        SoftmaxMLPClassifier().predict(X)
    clf = SoftmaxMLPClassifier(random_state=0).fit(X, y)
    before = pickle.dumps(clf)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="only one class"):
        clf.fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :5])
    with pytest.raises(ValueError, match="learning_rate"):
        clf.set_params(learning_rate=-1).fit(X, y)
    clf.set_params(learning_rate=1e-3)  # the default it was fitted with
    assert pickle.dumps(clf) == before  # every failed fit left the model as it was


def test_import_does_not_need_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import fastsoftmax as fs\n"
            "try:\n    fs.SoftmaxMLPClassifier\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install '.[sklearn]' in a clone of fastsoftmax" in out




@pytest.mark.parametrize("change, says", [
    (lambda meta, f: meta["hyperparameters"].update(hidden_size="lots"), "hidden_size"),
    (lambda meta, f: meta["hyperparameters"].update(depth=3), "unknown hyperparameters depth"),
    (lambda meta, f: meta["hyperparameters"].update(optimizer="rmsprop"), "optimizer"),
    (lambda meta, f: f.update(classes=f["classes"][::-1].copy()), "not sorted and distinct"),
    (lambda meta, f: f.update(classes=np.zeros_like(f["classes"])), "not sorted and distinct"),
])
def test_load_checks_what_it_reads_as_fit_would(tmp_path, change, says):
    """A saved model's hyperparameters pass the estimator's own checks and its classes
    are np.unique's (#35): a file that says otherwise is a ValueError naming it."""
    import json

    SoftmaxMLPClassifier(hidden_size=3, epochs=1, random_state=0).fit(*small()).save(
        tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as f:
        arrays = dict(f.items())
    meta = json.loads(str(arrays["meta"]))
    change(meta, arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=says) as err:
        SoftmaxMLPClassifier.load(tmp_path / "bad.npz")
    assert "bad.npz" in str(err.value)
