"""The public training API: backends, determinism, divergence, bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastsoftmax as fs

from helpers import RTOL, assert_params_close, make_data, rel_err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backends_agree(dtype):
    X, y = make_data(2000, dtype=dtype, seed=1)
    Xv, yv = make_data(300, dtype=dtype, seed=2)
    kw = dict(hidden_size=16, batch_size=50, learning_rate=0.1, epochs=2, alpha=1e-3,
              seed=3, dtype=dtype, X_val=Xv, y_val=yv)
    a = fs.train(X, y, backend="numba", **kw)
    b = fs.train(X, y, backend="numpy", **kw)
    assert not a.diverged and not b.diverged
    assert_params_close(a.params, b.params, dtype)
    for field in ("train_loss", "val_loss"):
        assert rel_err(getattr(a.history, field), getattr(b.history, field)) <= RTOL[np.dtype(dtype)]
    assert a.history.val_accuracy == b.history.val_accuracy
    assert len(a.history) == 2 and len(a.history.seconds) == 2
    assert a.params.W1.dtype == dtype and a.params.W1.shape == (784, 16)


def test_training_learns():
    X, y = make_data(3000, seed=4, dtype=np.float32)
    before = fs.evaluate(fs.init_params(784, 20, 10, seed=0), X, y)
    result = fs.train(X, y, hidden_size=20, batch_size=32, learning_rate=0.2, epochs=3)
    after = fs.evaluate(result.params, X, y)
    assert result.history.train_loss[-1] < result.history.train_loss[0]
    assert after[0] < before[0] and after[1] > before[1] + 0.2


def test_same_seed_bit_identical_different_seed_different():
    X, y = make_data(1000, seed=5, dtype=np.float32)
    kw = dict(hidden_size=12, batch_size=33, epochs=2)
    a = fs.train(X, y, seed=7, **kw)
    b = fs.train(X, y, seed=7, **kw)
    c = fs.train(X, y, seed=8, **kw)
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)
    assert a.history.train_loss == b.history.train_loss
    assert not np.array_equal(a.params.W1, c.params.W1)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint8_means_pixels(backend, dtype):
    """uint8 X (which the kernels read through a table of the 256 pixel values)
    gives exactly what the same pixels scaled by 1/255 in the model dtype give."""
    rng = np.random.default_rng(0)
    X8 = rng.integers(0, 256, (200, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 200)
    Xf = X8.astype(dtype) / dtype(255)
    kw = dict(epochs=2, hidden_size=4, dtype=dtype, backend=backend)
    a = fs.train(X8, y, X_val=X8[:50], y_val=y[:50], **kw)
    b = fs.train(Xf, y, X_val=Xf[:50], y_val=y[:50], **kw)
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)
    assert a.history.val_loss == b.history.val_loss
    np.testing.assert_array_equal(fs.predict_proba(a.params, X8), fs.predict_proba(a.params, Xf))
    assert fs.evaluate(a.params, X8, y, 1e-3) == fs.evaluate(a.params, Xf, y, 1e-3)


def test_start_from_params_continues_training():
    X, y = make_data(500, seed=6, dtype=np.float32)
    first = fs.train(X, y, hidden_size=8, epochs=1, seed=1)
    more = fs.train(X, y, params=first.params, epochs=1, seed=2)
    assert more.params.W1.shape == (784, 8)
    assert not np.array_equal(more.params.W1, first.params.W1)
    # the caller's params are not modified in place
    again = fs.train(X, y, params=first.params, epochs=1, seed=2)
    np.testing.assert_array_equal(again.params.W1, more.params.W1)


def test_divergence_is_reported_not_raised():
    X, y = make_data(500, seed=7, dtype=np.float32)
    result = fs.train(X, y, hidden_size=8, learning_rate=1e3, alpha=1.0, epochs=3)
    assert result.diverged
    assert len(result.history) == 0  # it diverged within the first epoch


def _loss_trace(X, y, params, lr, alpha, batch_size):
    """Every minibatch loss of one reference epoch, with no divergence rule."""
    losses = []
    for start in range(0, len(y), batch_size):
        value, params = fs.reference.sgd_step(params, X[start:start + batch_size],
                                              y[start:start + batch_size], lr, alpha)
        losses.append(value)
        if not np.isfinite(value):
            break
    return losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_huge_learning_rate_diverges_with_the_default_alpha(dtype):
    # learning_rate=1e3 with the default alpha: the weights are thrown so far
    # that the loss reaches thousands without ever overflowing, the case the
    # old rule (non-finite only) called healthy.
    X, y = make_data(512, seed=7, dtype=dtype)
    start = fs.init_params(784, 8, 10, seed=0, dtype=dtype)
    limit = fs.reference.divergence_limit(start, 1e-4, 10)
    trace = _loss_trace(X, y, start, 1e3, 1e-4, 64)
    assert all(np.isfinite(trace)) and max(trace) > limit  # finite, and far past the limit
    first_bad = next(i for i, v in enumerate(trace) if v > limit)

    result = fs.train(X, y, hidden_size=8, batch_size=64, learning_rate=1e3, epochs=3,
                      seed=0, dtype=dtype)
    assert result.diverged and len(result.history) == 0
    # the weights are those before the first minibatch past the limit, in both backends
    order = fs.minibatch_orders(len(y), 1, 0)[0]
    kept = start
    for b in range(first_bad):
        idx = order[b * 64:(b + 1) * 64]
        _, kept = fs.reference.sgd_step(kept, X[idx], y[idx], 1e3, 1e-4)
    ref = fs.train(X, y, hidden_size=8, batch_size=64, learning_rate=1e3, epochs=3, seed=0,
                   dtype=dtype, backend="numpy")
    assert ref.diverged
    assert_params_close(ref.params, kept, dtype)
    assert_params_close(result.params, kept, dtype)


def test_the_limit_is_100_times_a_chance_model_at_the_start():
    params = fs.init_params(784, 20, 10, seed=0)
    penalty = fs.reference.l2_penalty(params, 1.0)
    assert fs.reference.divergence_limit(params, 1.0, 10) == pytest.approx(
        100 * (np.log(10) + penalty))
    assert fs.reference.divergence_limit(params, 0.0, 2) == pytest.approx(100 * np.log(2))


def test_healthy_training_is_never_called_diverged():
    X, y = make_data(2000, seed=3, dtype=np.float32)
    for lr, alpha in ((0.1, 1e-4), (0.5, 1e-4), (0.05, 1.0), (1e-4, 1e-3)):
        result = fs.train(X, y, hidden_size=16, batch_size=32, learning_rate=lr, alpha=alpha,
                          epochs=3)
        assert not result.diverged, (lr, alpha)
    # resuming from a model with a tiny loss keeps a limit of at least 100 log(K)
    done = fs.train(X, y, hidden_size=16, learning_rate=0.5, epochs=20, alpha=0.0)
    assert fs.reference.divergence_limit(done.params, 0.0, 10) >= 100 * np.log(10)
    assert not fs.train(X, y, params=done.params, learning_rate=0.5, epochs=2, alpha=0.0).diverged


def test_predict_and_predict_proba():
    X, y = make_data(300, seed=8, dtype=np.float64)
    params = fs.train(X, y, hidden_size=8, epochs=2, dtype=np.float64).params
    P = fs.predict_proba(params, X)
    assert P.shape == (300, 10) and P.dtype == np.float64
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(fs.predict(params, X), P.argmax(axis=1))
    loss, acc = fs.evaluate(params, X, y)
    assert acc == np.mean(fs.predict(params, X) == y)
    np.testing.assert_allclose(loss, fs.reference.evaluate(params, X, y, 0.0)[0], rtol=1e-10)


def test_save_and_load_params(tmp_path):
    params = fs.init_params(784, 5, 10, seed=0)
    fs.save_params(tmp_path / "p.npz", params)
    loaded = fs.load_params(tmp_path / "p.npz")
    for p, q in zip(params, loaded):
        np.testing.assert_array_equal(p, q)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def _not_a_model(tmp_path, kind):
    """A file that load_params must refuse, of the given kind."""
    import pickle
    path = tmp_path / f"{kind.replace(' ', '_')}.npz"
    good = tmp_path / "good.npz"
    fs.save_params(good, fs.init_params(20, 4, 3, seed=0))
    if kind == "garbage":
        path.write_bytes(b"\x00\x13garbage" * 40)
    elif kind == "a pickle":
        path.write_bytes(pickle.dumps({"W1": np.ones(3)}))
    elif kind == "a npy array":
        with open(path, "wb") as f:
            np.save(f, np.ones((3, 3)))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:300])
    elif kind == "other arrays":
        np.savez(path, weights=np.ones(3))
    elif kind == "object arrays":
        np.savez(path, W1=np.array([{"a": 1}], dtype=object), b1=np.ones(4), W2=np.ones((4, 3)),
                 b2=np.ones(3))
    elif kind == "empty":
        path.write_bytes(b"")
    return path


NOT_A_MODEL = ["garbage", "a pickle", "a npy array", "truncated", "other arrays",
               "object arrays", "empty"]


@pytest.mark.parametrize("kind", NOT_A_MODEL)
def test_load_params_refuses_a_file_that_is_not_one(tmp_path, kind):
    path = _not_a_model(tmp_path, kind)
    with pytest.raises(ValueError) as info:
        fs.load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a fastsoftmax params file (")
    assert "allow_pickle" not in message
    with pytest.raises(FileNotFoundError):
        fs.load_params(tmp_path / "absent.npz")


GOOD = dict(hidden_size=4, batch_size=8, learning_rate=0.1, epochs=1, alpha=0.0)


@pytest.mark.parametrize("change, argument", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(learning_rate=float("inf")), "learning_rate"),
    (dict(epochs=0), "epochs"),
    (dict(alpha=-1e-3), "alpha"),
    (dict(alpha=float("nan")), "alpha"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(backend="torch"), "backend"),
    (dict(dtype=np.float16), "dtype"),
    (dict(dtype="int32"), "dtype"),
])
def test_bad_hyperparameters_name_the_argument(change, argument):
    X, y = make_data(20, dtype=np.float32)
    with pytest.raises(ValueError, match=argument):
        fs.train(X, y, **{**GOOD, **change})


@pytest.mark.parametrize("X, y, argument", [
    (np.zeros(784), np.zeros(1, int), "X must be 2-D"),
    (np.zeros((3, 784, 1)), np.zeros(3, int), "X must be 2-D"),
    (np.zeros((3, 784)), np.zeros(4, int), "y has 4 labels"),
    (np.zeros((3, 784)), np.array([0, 1, 10]), "y labels must lie in 0..9"),
    (np.zeros((3, 784)), np.array([0, -1, 2]), "y labels must lie in 0..9"),
    (np.zeros((3, 784)), np.array([0.5, 1, 2]), "y must hold integer labels"),
    (np.zeros((3, 784)), np.array(["a", "b", "c"]), "y must hold integer labels"),
    (np.full((3, 784), np.nan), np.zeros(3, int), "X contains NaN"),
    (np.full((3, 784), np.inf), np.zeros(3, int), "X contains NaN or infinity"),
    (np.zeros((3, 784), dtype=np.int32), np.zeros(3, int), "X must be floating point"),
])
def test_bad_arrays_name_the_argument(X, y, argument):
    with pytest.raises(ValueError, match=argument):
        fs.train(X, y, **GOOD)


def test_wrong_width_for_params():
    params = fs.init_params(784, 4, 10)
    with pytest.raises(ValueError, match="X has 100 features"):
        fs.train(np.zeros((3, 100)), np.zeros(3, int), params=params)
    with pytest.raises(ValueError, match="X has 100 features"):
        fs.predict(params, np.zeros((3, 100)))


def test_validation_set_checked():
    X, y = make_data(20)
    with pytest.raises(ValueError, match="X_val and y_val"):
        fs.train(X, y, X_val=X, **GOOD)
    with pytest.raises(ValueError, match="X_val has 5 features"):
        fs.train(X, y, X_val=X[:, :5], y_val=y, **GOOD)
    with pytest.raises(ValueError, match="y_val"):
        fs.train(X, y, X_val=X, y_val=y[:3], **GOOD)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), n_features=st.integers(1, 30), hidden=st.integers(1, 9),
       n_classes=st.integers(2, 6), batch_size=st.integers(1, 50),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_property_backends_agree_on_any_shape(n, n_features, hidden, n_classes, batch_size,
                                              dtype, seed):
    X, y = make_data(n, n_features=n_features, n_classes=n_classes, seed=seed % 1000,
                     dtype=dtype)
    kw = dict(hidden_size=hidden, batch_size=batch_size, learning_rate=0.05, epochs=2,
              alpha=1e-3, seed=seed, dtype=dtype, n_classes=n_classes)
    a = fs.train(X, y, backend="numba", **kw)
    b = fs.train(X, y, backend="numpy", **kw)
    assert a.params.shape == (n_features, hidden, n_classes)
    assert_params_close(a.params, b.params, dtype)
    assert rel_err(a.history.train_loss, b.history.train_loss) <= RTOL[np.dtype(dtype)]
    P = fs.predict_proba(a.params, X)
    assert P.shape == (n, n_classes) and np.all(np.isfinite(P))
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-5)


def _declaring(path, shapes, body=False):
    """An .npz whose members are .npy headers of ``shapes`` (name -> shape), float32,
    without their data (``body``: with it, zeros, for the small ones)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, shape in shapes.items():
            with z.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array_header_1_0(
                    member, {"descr": "<f4", "fortran_order": False, "shape": shape})
                if body:
                    member.write(np.zeros(shape, np.float32).tobytes())
    return path


@pytest.mark.parametrize("hidden", [10**6, 10**9])  # 3 GB; beyond any machine's memory
def test_a_model_file_declaring_too_much_is_refused_before_inflating(tmp_path, hidden):
    """Read from the headers (#35): a small file cannot make the loader allocate what its
    arrays claim.  Before, 784 x 10^6 cost 4 GB and 16 s, 10^9 a MemoryError."""
    path = _declaring(tmp_path / "big.npz", {"W1": (784, hidden), "b1": (hidden,),
                                            "W2": (hidden, 10), "b2": (10,)})
    says = f"declare {784 * hidden + hidden + hidden * 10 + 10:,} numbers, more than a model"
    with pytest.raises(ValueError, match=says) as err:
        fs.load_params(path)
    assert "big.npz: not a fastsoftmax params file" in str(err.value)


def test_a_header_without_its_data_is_called_corrupt(tmp_path):
    shapes = {"W1": (784, 3), "b1": (3,), "W2": (3, 10), "b2": (10,)}
    _declaring(tmp_path / "whole.npz", shapes, body=True)
    assert fs.load_params(tmp_path / "whole.npz").shape == (784, 3, 10)  # the maker works
    with pytest.raises(ValueError, match="head.npz: not a fastsoftmax params file "
                                         r"\(corrupt: ") as err:
        fs.load_params(_declaring(tmp_path / "head.npz", shapes))
    assert "object arrays" not in str(err.value)
