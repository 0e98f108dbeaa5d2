"""The softmax's exp: float32 without a call, within a few ulp of the true value."""

import numpy as np
import pytest

from fastsoftmax.kernels._exp import exp_nonpositive
from fastsoftmax.kernels.jit import jit


@jit(cache=False)
def _exp_all(x, out):
    # the kernels' flags (fastmath, error model): the code the softmax runs
    for i in range(x.shape[0]):
        out[i] = exp_nonpositive(x[i])


def _exp(x):
    out = np.empty_like(x)
    _exp_all(x, out)
    return out


def test_float32_exp_is_within_a_few_ulp_over_the_softmaxs_range():
    """Every x <= 0 the softmax can pass (z - max z), from 0 to past float32's underflow:
    within 8 ulp of exp(x) computed in float64 (ulp: the float32 spacing there, 2^-149
    among the subnormals; the C library's expf is within 1, and the reference's tolerance
    for float32 is 1e-4, about 800 ulp)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.uniform(0, 110, 200_000), -rng.uniform(0, 1, 100_000),
                        -rng.uniform(85, 105, 100_000), -np.logspace(-30, 2.05, 10_000),
                        [0.0, -0.0, -87.3, -88.0, -103.9, -104.0, -150.0, -1e30]])
    x = x.astype(np.float32)
    got = _exp(x)
    want = np.exp(x.astype(np.float64))
    ulps = np.abs(got - want) / np.spacing(want.astype(np.float32))
    assert ulps.max() <= 8, f"{ulps.max():.1f} ulp at x = {x[ulps.argmax()]!r}"
    assert got[-8] == 1 and got[-7] == 1  # exp(0) and exp(-0)
    assert np.all(got >= 0) and np.all(np.isfinite(got))


def test_float32_exp_is_monotonic_where_it_matters():
    """A larger logit never gets a smaller exp over a fine grid of [-20, 0] (probabilities
    keep the logits' order)."""
    x = np.linspace(-20, 0, 400_001, dtype=np.float32)
    assert np.all(np.diff(_exp(x)) >= 0)


@pytest.mark.parametrize("x", [0.0, -1e-300, -0.5, -7.25, -700.0, -800.0])
def test_float64_exp_is_numpys(x):
    """float64 keeps np.exp: its reference agreement is held to 1e-10."""
    got = _exp(np.array([x]))
    assert got[0] == np.exp(x)
