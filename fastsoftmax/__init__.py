"""fastsoftmax: a two-layer softmax network on Fashion-MNIST, trained by fused Numba kernels.

    >>> import numpy as np, fastsoftmax as fs
    >>> data = fs.load_fashion_mnist()
    >>> result = fs.train(data.train_images, data.train_labels, hidden_size=40, epochs=5)
    >>> loss, accuracy = fs.evaluate(result.params, data.test_images, data.test_labels)
"""

# First: the SIMD width fixes numba's compile target (FASTSOFTMAX_SIMD=avx2 turns AVX-512
# off in it), which must happen before any @jit decorator creates numba's CPU target.
from .kernels import simd  # noqa: I001  (fs.simd.WIDTH: what the kernels are built for)
from . import reference
from .data import CLASS_NAMES, DataError, Dataset, load_fashion_mnist
from .params import Params, init_params, load_params, minibatch_orders, save_params
from .trainer import History, TrainResult, evaluate, predict, predict_proba, train

__all__ = [
    "CLASS_NAMES", "DataError", "Dataset", "History", "Params", "TrainResult", "evaluate",
    "init_params", "load_fashion_mnist", "load_params", "minibatch_orders", "predict",
    "predict_proba", "reference", "save_params", "simd", "train", "SoftmaxMLPClassifier",
    "SoftmaxMLPGridSearchCV", "SoftmaxMLPRandomizedSearchCV",
]
_NEED_SKLEARN = {"SoftmaxMLPClassifier": "estimator", "SoftmaxMLPGridSearchCV": "search",
                 "SoftmaxMLPRandomizedSearchCV": "search"}
__version__ = "0.1.0"


def __getattr__(name):
    # The estimator and the searches need scikit-learn, an optional extra: imported
    # only when asked for.
    if name in _NEED_SKLEARN:
        import importlib
        try:
            module = importlib.import_module(f".{_NEED_SKLEARN[name]}", __name__)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "sklearn":
                raise
            raise ImportError(f"fastsoftmax.{name} needs scikit-learn: "
                              "pip install '.[sklearn]' in a clone of fastsoftmax, or "
                              "pip install 'scikit-learn>=1.6'") from exc
        return getattr(module, name)
    if name == "plots":  # matplotlib's pictures: `from fastsoftmax import plots`
        from .report import plots
        return plots
    raise AttributeError(f"module 'fastsoftmax' has no attribute {name!r}")
