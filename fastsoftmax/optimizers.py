"""Optimisers: which update rule, its settings, and the state it keeps.

``g`` is a minibatch's gradient with the L2 term added, ``g = dCE/dθ + alpha θ``
(weights only; a bias has no L2 term), as torch's ``weight_decay`` and
MLPClassifier's ``alpha`` both add it.  With learning rate ``lr``:

- ``sgd``: ``θ -= lr g``
- ``momentum`` (``torch.optim.SGD`` with ``momentum=mu``, no dampening):
  ``v = mu v + g``, then ``θ -= lr v``, or with ``nesterov=True``
  ``θ -= lr (g + mu v)``
- ``adam`` (``torch.optim.Adam``, the paper's Algorithm 1): ``t += 1``,
  ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``, then
  ``θ -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)``

The state starts at zero: ``v``, ``m`` and ``t`` are 0 before the first step.
MLPClassifier writes momentum as ``u = mu u - lr g``, ``θ += u`` (``u = -lr v``:
the same steps for a constant learning rate) and Adam with ``eps`` outside the
bias correction (``eps_sklearn = eps sqrt(1 - b2^t)``), a difference of order
eps.  :mod:`fastsoftmax.reference` applies these rules to Params,
:mod:`fastsoftmax.kernels` in their padded layout; both keep the state beside
the weights in the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checks import _check_real, check_positive_float
from .params import Params

# make_optimizer's parameters, which the estimator and fs.train take under these names.
OPTIMIZER_PARAMS = ("optimizer", "momentum", "nesterov", "beta1", "beta2", "epsilon")
# Codes the kernels branch on (plain ints: kernels take no Python objects).
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
NAMES = ("sgd", "momentum", "adam")
# A grid axis value names the whole rule: nesterov is momentum with nesterov=True.
AXIS_NAMES = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True)
class Optimizer:
    """An update rule and its settings (validated by :func:`make_optimizer`).

    name : "sgd", "momentum" or "adam"
    momentum : mu in [0, 1), for "momentum"
    nesterov : bool, Nesterov's variant of "momentum"
    beta1, beta2 : in [0, 1), Adam's decay rates of its two moments
    epsilon : > 0, Adam's guard against dividing by a tiny second moment
    """

    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    @property
    def code(self) -> int:
        """The kernels' code of this rule: SGD, MOMENTUM, NESTEROV or ADAM."""
        if self.name == "momentum":
            return NESTEROV if self.nesterov else MOMENTUM
        return ADAM if self.name == "adam" else SGD

    @property
    def axis_name(self) -> str:
        """The name a grid axis uses: "nesterov" for momentum with nesterov=True."""
        return AXIS_NAMES[self.code]

    @property
    def n_slots(self) -> int:
        """Arrays of state it keeps, each the shape of the weights: v, or m and v."""
        return (0, 1, 1, 2)[self.code]

    def settings(self, dtype) -> np.ndarray:
        """(4,) of ``dtype``: momentum, beta1, beta2, epsilon, as the kernels take them."""
        return np.array([self.momentum, self.beta1, self.beta2, self.epsilon], dtype)

    def as_dict(self) -> dict:
        """The settings this rule reads (others are left out): JSON-ready."""
        out = {"optimizer": self.name}
        if self.name == "momentum":
            out.update(momentum=self.momentum, nesterov=self.nesterov)
        elif self.name == "adam":
            out.update(beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon)
        return out


def _check_fraction(value, name: str) -> float:
    value = _check_real(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def make_optimizer(optimizer="sgd", momentum=0.9, nesterov=False, beta1=0.9, beta2=0.999,
                   epsilon=1e-8) -> Optimizer:
    """A checked :class:`Optimizer`; a bad argument raises ValueError naming it.

    ``optimizer`` may also be an :class:`Optimizer` (its settings checked, the other
    arguments ignored) or the grid axis name "nesterov" (momentum with nesterov=True).
    """
    if isinstance(optimizer, Optimizer):
        o = optimizer
        optimizer, momentum, nesterov, beta1, beta2, epsilon = (
            o.name, o.momentum, o.nesterov, o.beta1, o.beta2, o.epsilon)
    if optimizer == "nesterov":
        optimizer, nesterov = "momentum", True
    if optimizer not in NAMES:
        raise ValueError(f"optimizer must be one of {NAMES}, got {optimizer!r}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if nesterov and optimizer != "momentum":
        raise ValueError(f"nesterov=True needs optimizer='momentum', got {optimizer!r}")
    return Optimizer(optimizer, _check_fraction(momentum, "momentum"), bool(nesterov),
                     _check_fraction(beta1, "beta1"), _check_fraction(beta2, "beta2"),
                     check_positive_float(epsilon, "epsilon"))


@dataclass
class OptimizerState:
    """What an optimiser carries from one step to the next.

    slots : list of Params, each shaped like the model's: [v] for momentum,
        [m, v] for Adam, [] for SGD
    step : int, steps taken (Adam's t; counted for every rule)
    """

    slots: list = field(default_factory=list)
    step: int = 0

    def copy(self) -> "OptimizerState":
        return OptimizerState([s.copy() for s in self.slots], self.step)


def init_state(optimizer: Optimizer, params: Params) -> OptimizerState:
    """Zero state for ``optimizer`` on a model shaped like ``params`` (Params)."""
    return OptimizerState([Params(*(np.zeros_like(a) for a in params))
                           for _ in range(optimizer.n_slots)], 0)


def check_optimizer_state(state, optimizer: Optimizer, params: Params,
                          name: str = "optimizer_state") -> OptimizerState:
    """``state`` checked against the rule and the model: ValueError naming it otherwise."""
    if not isinstance(state, OptimizerState):
        raise ValueError(f"{name} must be an OptimizerState (TrainResult.optimizer_state), "
                         f"got {type(state).__name__}")
    if len(state.slots) != optimizer.n_slots:
        raise ValueError(f"{name} holds {len(state.slots)} state arrays but optimizer "
                         f"{optimizer.name!r} keeps {optimizer.n_slots}: it belongs to "
                         "another optimizer")
    for slot in state.slots:
        if not isinstance(slot, Params) or [a.shape for a in slot] != [a.shape for a in params]:
            raise ValueError(f"{name} is shaped for another model than params")
    step = state.step
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) \
            or step < 0:
        raise ValueError(f"{name}.step must be an integer >= 0, got {step!r}")
    return OptimizerState([slot.astype(params.dtype) for slot in state.slots], int(step))
