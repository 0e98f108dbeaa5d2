"""Momentum, Nesterov momentum and Adam: kernels against the reference, the
reference against torch.optim, and their state carried across calls."""

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import kernels, reference as ref
from fastsoftmax.optimizers import (ADAM, MOMENTUM, NESTEROV, SGD, Optimizer, OptimizerState,
                                    init_state, make_optimizer)

from helpers import RTOL, assert_params_close, make_data, rel_err

DTYPES = [np.float32, np.float64]
RULES = [("momentum", {}), ("momentum", {"nesterov": True}), ("adam", {}),
         ("momentum", {"momentum": 0.5}), ("adam", {"beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3})]


def _state_close(a: OptimizerState, b: OptimizerState, dtype):
    assert a.step == b.step
    assert len(a.slots) == len(b.slots)
    for s, t in zip(a.slots, b.slots):
        assert_params_close(s, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, settings", RULES)
def test_kernels_agree_with_reference(dtype, name, settings):
    """Three epochs of 9 minibatches (the last one short), weights and state."""
    opt = make_optimizer(name, **settings)
    X, y = make_data(70, n_features=50, dtype=dtype, seed=4)
    params = fs.init_params(50, 13, 10, seed=1, dtype=dtype)
    r_state, k_state = init_state(opt, params), init_state(opt, params)
    r, k = params, params
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(70)
        r, r_loss, _ = ref.train_epoch(r, X, y, order, 8, 0.05, 1e-2, np.inf, opt, r_state)
        k, k_loss, _ = kernels.train_epoch(k, X, y, order, 8, 0.05, 1e-2, np.inf, opt, k_state)
        assert rel_err(r_loss, k_loss) <= RTOL[np.dtype(dtype)]
    assert_params_close(r, k, dtype)
    _state_close(r_state, k_state, dtype)
    assert r_state.step == 27
    assert not any(np.array_equal(a, b) for a, b in zip(r, params))  # it trained


@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_differ(dtype):
    """Each rule takes its own path: after a few steps no two give the same weights."""
    X, y = make_data(40, n_features=20, dtype=dtype)
    params = fs.init_params(20, 8, 10, seed=0, dtype=dtype)
    out = []
    for opt in (Optimizer(), make_optimizer("momentum"), make_optimizer("nesterov"),
                make_optimizer("adam")):
        p, _, _ = kernels.train_epoch(params, X, y, np.arange(40), 10, 0.01, 1e-3, np.inf, opt)
        out.append(p.W1)
    for i in range(len(out)):
        for j in range(i):
            assert not np.allclose(out[i], out[j], rtol=1e-3, atol=0)


def test_first_momentum_step_is_sgd_and_adam_steps_by_lr():
    """Hand-checkable steps: momentum's first step is SGD's (v starts at 0);
    Adam's first step moves every weight by lr |g| / (|g| + eps) against its
    gradient g: after bias correction m = g and sqrt(v) = |g|."""
    X, y = make_data(16, n_features=12, dtype=np.float64)
    params = fs.init_params(12, 5, 10, seed=0, dtype=np.float64)
    _, grads = ref.loss_and_grads(params, X, y, 1e-3)
    sgd = ref.update(params, grads, 0.1, Optimizer(), init_state(Optimizer(), params))
    for opt in (make_optimizer("momentum"), make_optimizer("nesterov", momentum=0.0)):
        mom = ref.update(params, grads, 0.1, opt, init_state(opt, params))
        if not opt.nesterov:
            assert_params_close(mom, sgd, np.float64)
    adam = make_optimizer("adam")
    state = init_state(adam, params)
    stepped = ref.update(params, grads, 0.01, adam, state)
    g = np.abs(grads.W1)
    np.testing.assert_allclose(params.W1 - stepped.W1, 0.01 * grads.W1 / (g + 1e-8),
                               rtol=1e-9, atol=1e-15)
    assert state.step == 1
    np.testing.assert_allclose(state.slots[0].W1, 0.1 * grads.W1, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_mixed_rules_are_bit_identical_to_alone(dtype):
    """A pack mixing every rule and two hidden sizes: each model's weights and
    state are bit-identical to training it alone."""
    X, y = make_data(60, n_features=30, dtype=dtype, seed=2)
    opts = [Optimizer(), make_optimizer("adam"), make_optimizer("nesterov"),
            make_optimizer("momentum")]
    params = [fs.init_params(30, h, 10, seed=h, dtype=dtype) for h in (9, 16, 9, 20)]
    order = np.random.default_rng(3).permutation(60)
    lrs, alphas = [0.05, 0.01, 0.02, 0.03], [1e-3, 0.0, 1e-2, 1e-4]
    states = [init_state(o, p) for o, p in zip(opts, params)]
    together, losses, _ = kernels.train_epoch_many(params, X, y, order, 16, lrs, alphas,
                                                   None, opts, states)
    for m in range(4):
        state = init_state(opts[m], params[m])
        alone, loss, _ = kernels.train_epoch(params[m], X, y, order, 16, lrs[m], alphas[m],
                                             np.inf, opts[m], state)
        assert loss == losses[m]
        for a, b in zip(alone, together[m]):
            np.testing.assert_array_equal(a, b)
        assert state.step == states[m].step == 4
        for s, t in zip(state.slots, states[m].slots):
            for a, b in zip(s, t):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_train_continues_exactly_with_its_state(backend, optimizer):
    """Two epochs in one call equal one epoch and then one more from the first
    call's params and optimizer_state (orders passed by hand: a second call
    would draw its first order again)."""
    X, y = make_data(90, n_features=40, dtype=np.float32)
    whole = fs.train(X, y, hidden_size=12, epochs=2, optimizer=optimizer, backend=backend,
                     learning_rate=0.01, batch_size=16, seed=5)
    orders = fs.minibatch_orders(90, 2, 5)
    opt = make_optimizer(optimizer)
    engine = fs.trainer._Engine(backend, fs.init_params(40, 12, 10, seed=5), opt)
    limit = ref.divergence_limit(engine.params(), 1e-4, 10)
    engine.epoch(X, y, orders[0], 16, 0.01, 1e-4, limit)
    half = engine.optimizer_state()
    engine2 = fs.trainer._Engine(backend, engine.params(), opt, half)
    engine2.epoch(X, y, orders[1], 16, 0.01, 1e-4, limit)
    for a, b in zip(engine2.params(), whole.params):
        np.testing.assert_array_equal(a, b)
    assert whole.optimizer_state.step == engine2.optimizer_state().step == 12
    for s, t in zip(whole.optimizer_state.slots, engine2.optimizer_state().slots):
        for a, b in zip(s, t):
            np.testing.assert_array_equal(a, b)


def test_train_takes_state_back():
    """fs.train(params=..., optimizer_state=...) continues a run; without the
    state Adam restarts its moments and steps differently."""
    X, y = make_data(64, n_features=30, dtype=np.float32)
    first = fs.train(X, y, hidden_size=8, epochs=1, optimizer="adam", learning_rate=0.01)
    assert first.optimizer_state.step == 1 and len(first.optimizer_state.slots) == 2
    on = fs.train(X, y, params=first.params, optimizer_state=first.optimizer_state, epochs=1,
                  optimizer="adam", learning_rate=0.01)
    fresh = fs.train(X, y, params=first.params, epochs=1, optimizer="adam", learning_rate=0.01)
    assert on.optimizer_state.step == 2 and fresh.optimizer_state.step == 1
    assert not np.array_equal(on.params.W1, fresh.params.W1)
    # the state given is not modified
    assert first.optimizer_state.step == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(optimizer="adam", nesterov=True), "nesterov=True needs optimizer='momentum'"),
    (dict(optimizer="momentum", momentum=1.0), r"momentum must be in \[0, 1\)"),
    (dict(optimizer="momentum", momentum=-0.1), r"momentum must be in \[0, 1\)"),
    (dict(optimizer="adam", beta1=1.5), r"beta1 must be in \[0, 1\)"),
    (dict(optimizer="adam", beta2="0.9"), "beta2 must be a real number"),
    (dict(optimizer="adam", epsilon=0.0), "epsilon must be > 0"),
    (dict(optimizer="momentum", nesterov="yes"), "nesterov must be True or False"),
    # an Optimizer built by hand is checked as make_optimizer checks its arguments
    (dict(optimizer=Optimizer("momentum", momentum=1.5)), r"momentum must be in \[0, 1\)"),
    (dict(optimizer=Optimizer("adagrad")), "optimizer must be one of"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    X, y = make_data(10, n_features=5)
    with pytest.raises(ValueError, match=match):
        fs.train(X, y, hidden_size=3, epochs=1, **kwargs)


def test_bad_state_is_refused():
    X, y = make_data(20, n_features=6, dtype=np.float32)
    r = fs.train(X, y, hidden_size=4, epochs=1, optimizer="momentum")
    with pytest.raises(ValueError, match="optimizer 'adam' keeps 2"):
        fs.train(X, y, params=r.params, optimizer_state=r.optimizer_state, optimizer="adam")
    with pytest.raises(ValueError, match="shaped for another model"):
        other = fs.train(X, y, hidden_size=5, epochs=1, optimizer="momentum")
        fs.train(X, y, params=r.params, optimizer_state=other.optimizer_state,
                 optimizer="momentum")
    with pytest.raises(ValueError, match="needs the params it belongs to"):
        fs.train(X, y, optimizer_state=r.optimizer_state, optimizer="momentum")
    with pytest.raises(ValueError, match="must be an OptimizerState"):
        fs.train(X, y, params=r.params, optimizer_state={"v": 1}, optimizer="momentum")


def test_an_optimizer_object_trains_as_its_name_and_settings_do():
    X, y = make_data(40, n_features=6, dtype=np.float32)
    by_name = fs.train(X, y, hidden_size=4, epochs=2, optimizer="momentum", momentum=0.5,
                       nesterov=True)
    by_object = fs.train(X, y, hidden_size=4, epochs=2,
                         optimizer=Optimizer("momentum", momentum=0.5, nesterov=True))
    for a, b in zip(by_name.params, by_object.params):
        np.testing.assert_array_equal(a, b)


def test_codes_and_names():
    assert [make_optimizer(n).code for n in ("sgd", "momentum", "nesterov", "adam")] == \
        [SGD, MOMENTUM, NESTEROV, ADAM]
    assert make_optimizer("nesterov").axis_name == "nesterov"
    assert make_optimizer("momentum", nesterov=True) == make_optimizer("nesterov")
    assert make_optimizer("adam").as_dict() == {"optimizer": "adam", "beta1": 0.9,
                                                 "beta2": 0.999, "epsilon": 1e-8}


# ---------------------------------------------------------------- torch.optim

def _torch():
    return pytest.importorskip(
        "torch", reason="torch is not installed: the check against torch.optim runs with the "
                        "bench extra (pip install '.[bench]')")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, settings", RULES)
def test_reference_agrees_with_torch_optim(dtype, name, settings):
    """Six steps of torch.optim.SGD / Adam on the same model, minibatches and
    L2 (weight_decay on the weights only) give the reference's weights."""
    torch = _torch()
    opt = make_optimizer(name, **settings)
    X, y = make_data(48, n_features=30, dtype=dtype, seed=7)
    params = fs.init_params(30, 11, 10, seed=2, dtype=dtype)
    lr, alpha = 0.05, 1e-2
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    W1, b1, W2, b2 = (torch.tensor(a, dtype=tdt, requires_grad=True) for a in params)
    groups = [{"params": [W1, W2], "weight_decay": alpha},
              {"params": [b1, b2], "weight_decay": 0.0}]
    if name == "adam":
        t_opt = torch.optim.Adam(groups, lr=lr, betas=(opt.beta1, opt.beta2), eps=opt.epsilon)
    else:
        t_opt = torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, nesterov=opt.nesterov)
    state = init_state(opt, params)
    r = params
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for step in range(6):
        idx = slice(8 * step, 8 * step + 8)
        t_opt.zero_grad()
        Z = torch.relu(Xt[idx] @ W1 + b1) @ W2 + b2
        torch.nn.functional.cross_entropy(Z, yt[idx]).backward()
        t_opt.step()
        _, r = ref.sgd_step(r, X[idx], y[idx], lr, alpha, np.inf, opt, state)
    got = fs.Params(*(t.detach().numpy() for t in (W1, b1, W2, b2)))
    assert_params_close(r, got, dtype)
