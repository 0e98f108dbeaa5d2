"""Compiled kernels against the reference: the same names, one line each."""

import numba
import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import kernels, reference as ref
from fastsoftmax.kernels import epoch, evaluation, layout, products, steps
from fastsoftmax.kernels._tile import square_sums
from fastsoftmax.optimizers import init_state, make_optimizer

from helpers import RTOL, assert_params_close, make_data, rel_err

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True, scope="module", params=sorted(products.DESIGNS),
                ids=lambda design: f"tiles={design}")
def tile_design(request):
    """Every test here runs with each design of the tiles (kernels.products.DESIGNS), on
    this host's target: the kernels take the tiles as a pointer, so the same compiled
    kernels run either.  On a CPU without AVX-512, LLVM splits the 64-byte design's
    vectors in two: it runs (slowly) and checks everything but the instructions, which
    tests/test_simd.py reads for a Zen 4 target."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(products, "_tiles", products.DESIGNS[request.param])
        yield request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, hidden", [(1, 1), (5, 3), (64, 40), (203, 20)])
def test_loss_and_grads_agree(dtype, n, hidden):
    X, y = make_data(n, dtype=dtype, seed=n)
    params = fs.init_params(784, hidden, 10, seed=2, dtype=dtype)
    r_loss, r_grads = ref.loss_and_grads(params, X, y, 1e-3)
    k_loss, k_grads = kernels.loss_and_grads(params, X, y, 1e-3)
    assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r_grads, k_grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_features, hidden, n_classes", [(13, 9, 2), (50, 17, 23), (7, 64, 16)])
def test_other_shapes_agree(dtype, n_features, hidden, n_classes):
    """Feature, hidden and class counts off every tile size (the padding paths,
    the two-row tail tiles of the W2 update, more than one tile of classes)."""
    X, y = make_data(41, n_features=n_features, n_classes=n_classes, dtype=dtype, seed=hidden)
    params = fs.init_params(n_features, hidden, n_classes, seed=3, dtype=dtype)
    r_loss, r_grads = ref.loss_and_grads(params, X, y, 1e-2)
    k_loss, k_grads = kernels.loss_and_grads(params, X, y, 1e-2)
    assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r_grads, k_grads, dtype)
    order = np.random.default_rng(1).permutation(41)
    r_params, r_loss, _ = ref.train_epoch(params, X, y, order, 8, 0.1, 1e-2)
    k_params, k_loss, _ = kernels.train_epoch(params, X, y, order, 8, 0.1, 1e-2)
    assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r_params, k_params, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_step_agrees(dtype):
    X, y = make_data(64, dtype=dtype)
    params = fs.init_params(784, 40, 10, seed=0, dtype=dtype)
    r_loss, r_params = ref.sgd_step(params, X, y, 0.1, 1e-4)
    k_loss, k_params = kernels.sgd_step(params, X, y, 0.1, 1e-4)
    assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r_params, k_params, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [1, 37, 64, 5000])
def test_epoch_agrees(dtype, batch_size):
    n = 3000 if batch_size > 1 else 300
    X, y = make_data(n, dtype=dtype, seed=batch_size)
    params = fs.init_params(784, 20, 10, seed=1, dtype=dtype)
    order = np.random.default_rng(5).permutation(n)
    r_params, r_loss, r_div = ref.train_epoch(params, X, y, order, batch_size, 0.05, 1e-3)
    k_params, k_loss, k_div = kernels.train_epoch(params, X, y, order, batch_size, 0.05, 1e-3)
    assert not r_div and not k_div
    assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r_params, k_params, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_evaluate_and_predict_proba_agree(dtype):
    X, y = make_data(700, dtype=dtype)  # more than one evaluation block, with a tail
    params = fs.init_params(784, 13, 10, seed=4, dtype=dtype)
    r = ref.evaluate(params, X, y, 0.01)
    k = kernels.evaluate(params, X, y, 0.01)
    assert rel_err(r[0], k[0]) <= RTOL[np.dtype(dtype)]
    assert r[1] == k[1]
    P = kernels.predict_proba(params, X)
    assert P.dtype == dtype
    assert rel_err(ref.predict_proba(params, X), P) <= RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pixels", [False, True])
def test_evaluating_together_equals_evaluating_alone(dtype, pixels):
    # The sweep validates a pack's models in one pass (one gather, one wide first-layer
    # product); each model's summed cross-entropy, correct count and probabilities
    # must be those it gets alone, to the bit.  A model marked dead is skipped: its
    # outputs keep what they held.
    X, y = make_data(700, dtype=dtype, seed=2)  # several blocks, with a tail
    if pixels:
        X = np.random.default_rng(3).integers(0, 256, X.shape, dtype=np.uint8)
    hidden = [20, 7, 40, 3]
    params = [fs.init_params(784, h, 10, seed=i, dtype=dtype) for i, h in enumerate(hidden)]
    state, offs, hidden = kernels.pack(params)
    rows, table = kernels.data_rows(X, dtype)
    alive = np.array([True, True, False, True])
    ce, correct = np.full(4, -1.0), np.full(4, -1, np.int64)
    products.with_tiles(evaluation._forward_blocks, dtype, rows, table, state, offs, hidden, 10,
                        alive, y, ce, correct, np.empty((0, 0, 0), dtype), evaluation.NO_PROBA)
    proba = np.full((4, X.shape[0], 10), -1, dtype)
    products.with_tiles(evaluation._forward_blocks, dtype, rows, table, state, offs, hidden, 10,
                        alive, np.empty(0, np.int64), np.zeros(4), np.zeros(4, np.int64), proba,
                        evaluation.WANT_PROBA)
    assert ce[2] == -1.0 and correct[2] == -1 and (proba[2] == -1).all()
    for m in (0, 1, 3):
        loss, accuracy = kernels.evaluate(params[m], X, y, 0.0)
        assert ce[m] / X.shape[0] == loss and correct[m] / X.shape[0] == accuracy
        np.testing.assert_array_equal(proba[m], kernels.predict_proba(params[m], X))
        Xf = fs.checks.pixels_to_float(X, np.dtype(dtype)) if pixels else X
        assert rel_err(ref.evaluate(params[m], Xf, y, 0.0)[0], loss) <= RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_give_finite_loss(dtype):
    X, y = make_data(8, n_features=6, n_classes=3, dtype=dtype)
    X = np.ones_like(X)
    params = fs.init_params(6, 2, 3, seed=0, dtype=dtype)
    # Logits of about +-1e4: W2 scaled so the largest logit is ~1e4 above the rest.
    W2 = np.zeros_like(params.W2)
    W2[:, 0] = 1e4 / (np.maximum(X @ params.W1, 0).sum(axis=1).max() / 2 + 1e-3) / 2
    W2[:, 1] = -W2[:, 0]
    params = fs.Params(params.W1, params.b1, W2, params.b2)
    Z = ref.forward(params, X).Z
    assert np.abs(Z).max() > 1e3
    loss, grads = kernels.loss_and_grads(params, X, y, 0.0)
    r_loss, _ = ref.loss_and_grads(params, X, y, 0.0)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
    assert rel_err(r_loss, loss) <= RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_together_equals_training_alone(dtype):
    # Models of several widths share each gathered minibatch; one diverges
    # part-way (lr * alpha = 1e30 overflows float64 too) and must not disturb the others.
    X, y = make_data(600, dtype=dtype, seed=4)
    order = np.random.default_rng(6).permutation(600)
    hidden = [20, 7, 40, 3]
    lrs, alphas = [0.05, 0.2, 0.01, 1e30], [1e-3, 0.0, 1.0, 1.0]
    params = [fs.init_params(784, h, 10, seed=i, dtype=dtype) for i, h in enumerate(hidden)]
    together, losses, diverged = kernels.train_epoch_many(params, X, y, order, 32, lrs, alphas)
    assert diverged == [False, False, False, True] and np.isnan(losses[3])
    for m, p in enumerate(params):
        alone, loss, div = kernels.train_epoch(p, X, y, order, 32, lrs[m], alphas[m])
        assert div == diverged[m]
        if not div:  # a diverged model's weights are not used; its packmates' are exact
            for a, b in zip(alone, together[m]):
                np.testing.assert_array_equal(a, b)
            assert rel_err(loss, losses[m]) <= 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_column_coefficients_equal_uniform_ones_column_by_column(dtype):
    """out = beta out + gamma a b with one (beta, gamma) per column: each column has
    the bits of the product with that column's pair in every column, so a pack's
    models updated side by side (each its own decay and learning rate) match their
    updates alone.  beta = 0 overwrites: a NaN there must not leak in.  (Coefficients
    are passed as the kernels pass them, one per column, so _tiles compiles nothing
    here that they do not use.)"""
    rng = np.random.default_rng(7)
    rows, k, width = 26, 19, 40  # tall, 6-row and 2-row tiles; 2-vector and 1-vector strips
    a = rng.standard_normal(rows * k).astype(dtype)
    b = rng.standard_normal(k * width).astype(dtype)
    out = rng.standard_normal(rows * width).astype(dtype)
    beta = rng.uniform(0.5, 1.0, width).astype(dtype)
    gamma = rng.uniform(-1.0, -0.1, width).astype(dtype)
    beta[[3, 17, 38]] = 0
    out.reshape(rows, width)[:, [3, 17, 38]] = np.nan
    one = layout.UNIT
    got = out.copy()
    products._tiles(a, k, one, rows, b, width, k, got, width, width, beta, gamma)
    got = got.reshape(rows, width)
    assert np.isfinite(got).all()
    for j in range(width):
        want = out.copy()
        products._tiles(a, k, one, rows, b, width, k, want, width, width,
                        np.full(width, beta[j]), np.full(width, gamma[j]))
        np.testing.assert_array_equal(got[:, j], want.reshape(rows, width)[:, j])
    exact = (np.where(beta == 0, 0, beta) * np.nan_to_num(out.reshape(rows, width))
             + gamma * (a.reshape(rows, k).astype(np.float64) @ b.reshape(k, width)))
    np.testing.assert_allclose(got, exact, rtol=RTOL[np.dtype(dtype)] * 100, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_products_rows_have_the_same_bits_whatever_tile_computes_them(dtype):
    """_tiles picks tiles of 2 to 12 rows by the row count (and the host's width): each
    output is the same chain of multiply-adds in any of them, so a product's rows equal,
    bit for bit, the same rows computed two at a time (the 2-row tiles alone)."""
    rng = np.random.default_rng(11)
    k, width = 23, 40  # 2-vector and 1-vector strips in float32, more in float64
    b = rng.standard_normal(k * width).astype(dtype)
    one = layout.UNIT
    for rows in (2, 4, 6, 8, 10, 12, 14, 20, 24, 26, 32, 38):
        a = rng.standard_normal(rows * k).astype(dtype)
        out = rng.standard_normal(rows * width).astype(dtype)
        beta, gamma = np.full(width, dtype(0.75)), np.full(width, dtype(-0.5))
        together = out.copy()
        products._tiles(a, k, one, rows, b, width, k, together, width, width, beta, gamma)
        pairs = out.copy()
        for r in range(0, rows, 2):
            products._tiles(a[r * k:], k, one, 2, b, width, k, pairs[r * width:], width, width,
                           beta, gamma)
        np.testing.assert_array_equal(together, pairs, err_msg=f"{rows} rows")
        # the transposed layout the weight updates use: rows adjacent, k strided
        aT = np.ascontiguousarray(a.reshape(rows, k).T).ravel()
        together_t = out.copy()
        products._tiles(aT, one, rows, rows, b, width, k, together_t, width, width, beta, gamma)
        np.testing.assert_array_equal(together_t, together, err_msg=f"{rows} rows, transposed")


@numba.njit
def _square_sums(w, parts):
    sums = np.empty(w.shape[1], w.dtype)
    square_sums(w.ravel(), w.shape[0], w.shape[1], parts, sums)
    return sums


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_square_sums_agree_and_do_not_depend_on_where_a_column_sits(dtype):
    """_tile.square_sums, the L2 term's one pass over a pack's wide W1: each column's
    sum of squares within the dtype's tolerance, whatever scratch it is handed (NaN
    here), over row counts with every tail of the 4 partial sums; and a column's sum
    has the same bits at any position, so a model's L2 term is the same alone and in
    a pack."""
    rng = np.random.default_rng(5)
    lanes = 32 // np.dtype(dtype).itemsize
    for rows, width in [(0, lanes), (1, lanes), (3, 2 * lanes), (784, 160), (787, 5 * lanes),
                        (786, 3 * lanes)]:
        w = rng.standard_normal((rows, width)).astype(dtype)
        parts = np.full(4 * width, np.nan, dtype)
        sums = _square_sums(w, parts)
        want = (w.astype(np.float64) ** 2).sum(axis=0)
        np.testing.assert_allclose(sums, want, rtol=RTOL[np.dtype(dtype)] * 10)
        moved = rng.permutation(width)
        np.testing.assert_array_equal(_square_sums(np.ascontiguousarray(w[:, moved]), parts),
                                      sums[moved], err_msg=f"{rows} x {width}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_w1_update_in_row_blocks_has_the_bits_of_one_pass(dtype):
    """The update W1 = beta W1 + gamma Xb^T dA runs in blocks of W1_ROW_BLOCK feature
    rows (_w1_product); every output is still one tile's sum over the samples, so the
    result equals one _tiles call over all the rows, bit for bit."""
    rng = np.random.default_rng(9)
    Dp, Hp, n = 784, 40, 37
    assert Dp > 2 * steps.W1_ROW_BLOCK  # several blocks and a short last one
    npad = int(kernels.pad_samples(n))
    Xb = np.zeros((npad, Dp), dtype)
    Xb[:n] = rng.random((n, Dp))
    dA = np.zeros((npad, Hp), dtype)
    dA[:n] = rng.standard_normal((n, Hp)) * 1e-2
    W1 = rng.standard_normal((Dp, Hp)).astype(dtype)
    beta = rng.uniform(0.9, 1.0, Hp).astype(dtype)
    gamma = rng.uniform(-0.1, -0.01, Hp).astype(dtype)
    blocked = W1.copy()
    products.with_tiles(steps._w1_update, dtype, Xb, n, dA, blocked, beta, gamma)
    one_pass = W1.copy().ravel()
    products._tiles(Xb.ravel(), layout.UNIT, Dp, Dp, dA.ravel(), Hp, npad, one_pass, Hp, Hp,
                   beta, gamma)
    np.testing.assert_array_equal(blocked, one_pass.reshape(Dp, Hp))
    exact = beta * W1 + gamma * (Xb.astype(np.float64).T @ dA)
    np.testing.assert_allclose(blocked, exact, rtol=RTOL[np.dtype(dtype)] * 100, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_pack_with_every_rule_diverging_or_not_equals_each_model_alone(dtype):
    """Models side by side in the pack's wide W1, two of them (one plain SGD, one
    momentum) diverging part-way: every model, the diverged ones too (their
    weights from before the bad minibatch), has its weights, loss and state bit
    for bit as trained alone."""
    X, y = make_data(300, n_features=50, dtype=dtype, seed=8)
    order = np.random.default_rng(2).permutation(300)
    opts = [make_optimizer("sgd"), make_optimizer("adam"), make_optimizer("momentum"),
            make_optimizer("sgd"), make_optimizer("nesterov")]
    hidden = [9, 13, 7, 20, 3]
    lrs, alphas = [1e30, 0.01, 1e30, 0.05, 0.02], [1.0, 1e-3, 1.0, 1e-4, 0.0]
    params = [fs.init_params(50, h, 10, seed=i, dtype=dtype) for i, h in enumerate(hidden)]
    states = [init_state(o, p) for o, p in zip(opts, params)]
    together, losses, diverged = kernels.train_epoch_many(params, X, y, order, 32, lrs, alphas,
                                                          None, opts, states)
    assert diverged == [True, False, True, False, False]
    for m, p in enumerate(params):
        state = init_state(opts[m], p)
        alone, loss, div = kernels.train_epoch(p, X, y, order, 32, lrs[m], alphas[m], np.inf,
                                               opts[m], state)
        assert div == diverged[m]
        assert loss == losses[m] or (np.isnan(loss) and np.isnan(losses[m]))
        for a, b in zip(alone, together[m]):
            np.testing.assert_array_equal(a, b)
        if div:  # alone is this kernel too: the reference says which weights it keeps
            r_params, _, r_div = ref.train_epoch(p, X, y, order, 32, lrs[m], alphas[m],
                                                 np.inf, opts[m], init_state(opts[m], p))
            assert r_div and np.abs(r_params.W1).max() > 1e20
            np.testing.assert_allclose(np.abs(alone.W1).max(), np.abs(r_params.W1).max(),
                                       rtol=1e-3)
        assert state.step == states[m].step
        for s, t in zip(state.slots, states[m].slots):
            for a, b in zip(s, t):
                np.testing.assert_array_equal(a, b)


def _epoch_args(params, X, y, order, lrs, alphas, opts):
    """The epoch kernels' arguments for ``params`` packed, and the arrays they write."""
    packed = kernels.Packed(params, opts)
    dt = packed.dtype
    P = len(params)
    out = (np.ones(P, np.bool_), np.empty(P), np.empty(P))
    args = (*kernels.data_rows(X, dt), y.astype(np.int64), order.astype(np.int64), 32,
            np.asarray(lrs, dt), np.asarray(alphas, dt), np.full(P, np.inf), packed.flat,
            packed.offs, packed.hidden, 10, *out, packed.opts, packed.settings, packed.slots,
            packed.steps)
    return args, (packed.flat, packed.steps) + out


@pytest.mark.parametrize("pixels", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_sgd_only_epoch_kernel_gives_the_full_kernels_bits(dtype, pixels):
    """The epoch kernel without the other optimiser rules (what all-SGD grids and fits
    run) is the full one with those branches pruned: on plain-SGD models, one of them
    diverging part-way, its weights, losses and divergence are the full kernel's, bit
    for bit; so a model trains the same whichever rules share its grid."""
    X, y = make_data(300, dtype=dtype, seed=3)
    if pixels:
        X = np.random.default_rng(1).integers(0, 256, X.shape, dtype=np.uint8)
    order = np.random.default_rng(5).permutation(300)
    hidden, lrs, alphas = [20, 7, 40], [0.05, 1e30, 0.2], [1e-3, 1.0, 0.0]
    params = [fs.init_params(784, h, 10, seed=i, dtype=dtype) for i, h in enumerate(hidden)]
    sgd = [make_optimizer("sgd")] * 3
    results = []
    for kernel in (epoch._train_epoch_sgd, epoch._train_epoch_many):
        args, written = _epoch_args(params, X, y, order, lrs, alphas, sgd)
        products.with_tiles(kernel, dtype, *args)
        results.append(written)
    assert list(results[0][2]) == [True, False, True]  # alive: the middle one diverged
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert kernels.epoch_kernel(kernels.Packed(params, sgd).opts) is epoch._train_epoch_sgd


def test_the_sgd_only_epoch_kernel_refuses_other_rules():
    X, y = make_data(64, dtype=np.float32)
    params = [fs.init_params(784, 5, 10, seed=i) for i in range(2)]
    opts = [make_optimizer("sgd"), make_optimizer("momentum")]
    args, written = _epoch_args(params, X, y, np.arange(64), [0.1, 0.1], [0.0, 0.0], opts)
    before = written[0].copy()
    with pytest.raises(ValueError, match="plain-SGD models only"):
        products.with_tiles(epoch._train_epoch_sgd, np.float32, *args)
    np.testing.assert_array_equal(written[0], before)  # refused before any update
    assert kernels.epoch_kernel(args[15]) is epoch._train_epoch_many  # opts


def test_divergence_stops_before_the_bad_update():
    X, y = make_data(256, dtype=np.float32)
    params = fs.init_params(784, 8, 10, seed=0, dtype=np.float32)
    order = np.arange(256)
    # With learning_rate * alpha = 1000 the L2 term alone multiplies the
    # weights by -999 per step, so float32 overflows within a few steps.
    k_params, k_loss, k_div = kernels.train_epoch(params, X, y, order, 16, 1e3, 1.0)
    r_params, r_loss, r_div = ref.train_epoch(params, X, y, order, 16, 1e3, 1.0)
    assert k_div and r_div
    assert np.isnan(k_loss) and np.isnan(r_loss)
    # Both stop at the same minibatch, before its update, so they return
    # weights of the same (huge, but finite) size.
    assert np.isfinite(k_params.W1).all() and np.abs(k_params.W1).max() > 1e10
    np.testing.assert_allclose(np.abs(k_params.W1).max(), np.abs(r_params.W1).max(), rtol=1e-3)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padding_is_exact(dtype, optimizer):
    """Hidden sizes, feature counts and minibatches that are not multiples of
    the tiles train exactly as the unpadded reference: the pad units and
    features, and the optimiser's state for them, stay exactly zero."""
    X, y = make_data(50, n_features=31, dtype=dtype)
    params = fs.init_params(31, 3, 10, seed=0, dtype=dtype)
    opt = make_optimizer(optimizer)
    packed = kernels.Packed([params], [opt])
    packed.epoch(X, y, np.arange(50), 7, [0.1], [0.01])
    flat, slots, hidden = packed.flat, packed.slots, packed.hidden
    Dp = kernels.pad_features(31)
    for arrays in (flat, *slots[:opt.n_slots]):
        W1, b1, W2, b2 = kernels.packed_views(arrays, 0, kernels.pad_hidden(hidden[0]), Dp, 10)
        assert W1.shape == (Dp, kernels.pad_hidden(3))
        assert W1.shape[0] > 31 and W1.shape[1] > 3
        assert not W1[31:].any() and not W1[:, 3:].any()
        assert not b1[3:].any() and not W2[3:].any() and not W2[:, 10:].any()
    assert slots.shape[0] == 2 and slots.shape[1] == (flat.size if opt.n_slots else 0)
    ref, _, _ = fs.reference.train_epoch(params, X, y, np.arange(50), 7, 0.1, 0.01, np.inf,
                                         opt, init_state(opt, params))
    assert_params_close(packed.params(0), ref, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_pixel_value_reads_exactly(dtype):
    """The kernels' reading of uint8 pixels equals pixels_to_float for all 256 values."""
    X = np.arange(256, dtype=np.uint8).reshape(2, 128)
    Xb = np.zeros((kernels.pad_samples(2), 128), dtype)
    steps._gather(X, kernels.pixel_table(dtype), np.arange(2), 2, Xb)
    want = fs.checks.pixels_to_float(X, np.dtype(dtype))
    np.testing.assert_array_equal(Xb[:2], want)
