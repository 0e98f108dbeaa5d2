"""The peers train the same model: one epoch from the same weights and order
gives the reference's weights (a guard that the benchmarks compare like with like).

scikit-learn's MLPClassifier is left out: it draws its own initialisation and
order, so only its loss scale can be compared, which test_epoch's numbers show.
"""

import numpy as np
import pytest

import fastsoftmax as fs
from peers import (Fastsoftmax, FastsoftmaxPack, FastsoftmaxPixels, JaxScan, JaxVmap, Missing,
                   NumpyReference, TorchIdiomatic, TorchManual)


def _weights(impl):
    if isinstance(impl, Fastsoftmax):
        return impl.engine.params()
    if isinstance(impl, NumpyReference):
        return impl.params
    if isinstance(impl, TorchIdiomatic):
        m = impl.model
        return fs.Params(m[0].weight.detach().numpy().T, m[0].bias.detach().numpy(),
                         m[2].weight.detach().numpy().T, m[2].bias.detach().numpy())
    if isinstance(impl, TorchManual):
        return fs.Params(*(t.numpy() for t in (impl.W1, impl.b1, impl.W2, impl.b2)))
    return fs.Params(*(np.asarray(a) for a in impl.params))


@pytest.mark.parametrize("peer", [Fastsoftmax, FastsoftmaxPixels, JaxScan, TorchIdiomatic,
                                  TorchManual])
def test_one_epoch_matches_reference(peer):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1000, 784)) * (rng.random((1000, 784)) < 0.5)
    X = (pixels.astype(np.float32) / np.float32(255))  # as the benchmarks' data: pixels / 255
    y = rng.integers(0, 10, 1000)
    ref = NumpyReference(X, y, 24, 64)
    ref.epoch()
    try:
        impl = peer(X, y, 24, 64)
    except Missing as exc:
        pytest.skip(str(exc))
    impl.epoch()
    for name, a, b in zip(fs.Params._fields, _weights(impl), ref.params):
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= 1e-4 * scale, name


@pytest.mark.parametrize("peer", [FastsoftmaxPack, JaxVmap])
def test_four_configurations_match_the_reference(peer):
    """The grid-search peers train each of their 4 learning rates as the reference would."""
    rng = np.random.default_rng(1)
    X = (rng.integers(0, 256, (600, 784)) / 255).astype(np.float32)
    y = rng.integers(0, 10, 600)
    try:
        impl = peer(X, y, 24, 64, n_configs=4)
    except Missing as exc:
        pytest.skip(str(exc))
    impl.epoch()
    for m in range(4):
        ref = fs.init_params(784, 24, 10, seed=0, dtype=np.float32)
        order = fs.minibatch_orders(600, 1, 0)[0]
        ref, _, _ = fs.reference.train_epoch(ref, X, y, order, 64, float(impl.lrs[m]), 1e-4)
        got = impl.trained(m) if isinstance(impl, FastsoftmaxPack) else fs.Params(
            *(np.asarray(a[m]) for a in impl.params))
        for name, a, b in zip(fs.Params._fields, got, ref):
            assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), (m, name)
