"""Fused Numba kernels, and thin wrappers with the reference's names.

The package, bottom up (each module imports only those above it):

- :mod:`.simd`: the SIMD width the kernels are built for (imported first: it may
  change numba's compile target, which must happen before anything compiles);
- :mod:`.jit`: every numba option the kernels use;
- ``_alloc``, ``_exp``, ``_prefetch``, ``_views``, ``_tile``: LLVM-IR helpers
  (aligned allocation, a call-free exp, prefetch, array views, register tiles);
- :mod:`.layout`: the kernel form of a model (padded shapes, packs of models);
- :mod:`.products`: ``_tiles``, the one matrix-product routine of every kernel;
- :mod:`.steps`: the blocks a training step is made of, and one step's gradients;
- :mod:`.epoch`: the epoch kernel for a pack of models, and :class:`Packed`;
- :mod:`.evaluation`: the forward pass over a data set (loss, accuracy, proba);
- :mod:`.compile_aside`: compiling a kernel in a second process on a first run.

All five products of a step are tiles of ``_tiles``: the forward ``Hd = relu(Xb
W1 + b1)`` and ``Z = Hd W2 + b2``, the backward ``dA = (G W2^T) * [Hd > 0]``, and
the updates ``W1 = (1 - lr alpha) W1 - lr Xb^T dA`` and ``W2 = (1 - lr alpha) W2 -
lr Hd^T G``, applied in place without storing the weight gradients (plain SGD).
Momentum and Adam store the gradient instead (the same tiles, overwriting a
buffer) and update weights and state in an elementwise pass (``_optimizer_rule``);
their state is packed like the model.

The private ``_`` kernels take only arrays and scalars of the model's dtype and
allocate only once per call (never per minibatch).  The public wrappers
(``loss_and_grads``, ``sgd_step``, ``train_epoch``, ``evaluate``,
``predict_proba``) mirror :mod:`fastsoftmax.reference` for testing.
"""

from . import simd  # noqa: I001  (first: it fixes numba's compile target)
from .epoch import Packed, epoch_kernel, sgd_step, train_epoch, train_epoch_many
from .evaluation import evaluate, predict_proba
from .layout import (from_kernel, offsets, pack, pack_slots, packed_size, packed_views,
                     pad_classes, pad_features, pad_hidden, pad_samples, pixel_table,
                     settings_of, data_rows, to_kernel, unpack)
from .steps import loss_and_grads

__all__ = [
    "Packed", "epoch_kernel", "evaluate", "from_kernel", "loss_and_grads", "offsets", "pack",
    "pack_slots", "packed_size", "packed_views", "pad_classes", "pad_features", "pad_hidden",
    "pad_samples", "pixel_table", "predict_proba", "settings_of", "sgd_step", "simd",
    "data_rows", "to_kernel", "train_epoch", "train_epoch_many", "unpack",
]
