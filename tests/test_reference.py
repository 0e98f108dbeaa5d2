"""The reference (and the kernels' gradients) against the mathematics: finite differences
and stability."""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import kernels, reference as ref

from helpers import make_data


@pytest.mark.parametrize("impl", [ref, kernels], ids=["reference", "kernels"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_gradients_match_central_differences(alpha, impl):
    """Each implementation's gradient against central differences of its own loss."""
    X, y = make_data(7, n_features=12, n_classes=4, seed=3)
    params = fs.init_params(12, 5, 4, seed=1, dtype=np.float64)
    # Non-zero biases so every term of the gradient is exercised.
    rng = np.random.default_rng(0)
    params = fs.Params(params.W1, rng.normal(0, 0.1, 5), params.W2, rng.normal(0, 0.1, 4))
    _, grads = impl.loss_and_grads(params, X, y, alpha)
    eps = 1e-6
    for name, p, g in zip(fs.Params._fields, params, grads):
        numeric = np.empty_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + eps
            up = impl.loss_and_grads(params, X, y, alpha)[0]
            p[idx] = saved - eps
            down = impl.loss_and_grads(params, X, y, alpha)[0]
            p[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        # Central differences are accurate to O(eps^2) plus rounding ~1e-16/eps.
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_l2_is_on_weights_only():
    X, y = make_data(5, n_features=6, n_classes=3)
    params = fs.init_params(6, 4, 3, seed=0, dtype=np.float64)
    _, g0 = ref.loss_and_grads(params, X, y, 0.0)
    _, g1 = ref.loss_and_grads(params, X, y, 0.5)
    np.testing.assert_allclose(g1.W1 - g0.W1, 0.5 * params.W1, atol=1e-12)
    np.testing.assert_allclose(g1.W2 - g0.W2, 0.5 * params.W2, atol=1e-12)
    np.testing.assert_array_equal(g1.b1, g0.b1)
    np.testing.assert_array_equal(g1.b2, g0.b2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_logits(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [5e3, 5e3, -3e3]], dtype)
    y = np.array([1, 2])
    P = ref.softmax(Z)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-6)
    loss = ref.cross_entropy(Z, y)
    # -log p = lse(z) - z[y]: 2e4 for the first row and 8e3 + log 2 for the second.
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (2e4 + 8e3 + np.log(2)) / 2, rtol=1e-6)


def test_last_minibatch_is_averaged_over_its_own_size():
    X, y = make_data(10, n_features=8, n_classes=3)
    params = fs.init_params(8, 4, 3, seed=0, dtype=np.float64)
    order = np.arange(10)
    trained, loss, diverged = ref.train_epoch(params, X, y, order, 4, 0.1, 0.0)
    # By hand: minibatches of 4, 4 and 2, each step on its own mean loss.
    p = params
    total = 0.0
    for idx in (order[0:4], order[4:8], order[8:10]):
        value, grads = ref.loss_and_grads(p, X[idx], y[idx], 0.0)
        total += value * len(idx)
        p = fs.Params(*(a - 0.1 * g for a, g in zip(p, grads)))
    assert not diverged
    np.testing.assert_allclose(loss, total / 10, rtol=1e-14)
    for a, b in zip(trained, p):
        np.testing.assert_allclose(a, b, rtol=1e-14)
