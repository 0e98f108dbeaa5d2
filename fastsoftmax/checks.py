"""Input validation shared by the public functions.

Every error is a ``ValueError`` whose message starts with the argument's name,
so a user can tell which of several arrays or numbers was wrong.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}")
    return dt


def check_positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_positive_float(value, name: str) -> float:
    value = _check_real(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_nonnegative_float(value, name: str) -> float:
    value = _check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def pixels_to_float(X, dtype: np.dtype) -> np.ndarray:
    """uint8 pixel intensities as ``dtype`` in [0, 1]: the division is done in
    ``dtype``, so every backend sees exactly the same numbers."""
    return X.astype(dtype) / dtype.type(255)


def check_X(X, dtype: np.dtype, n_features: int | None = None, name: str = "X",
            keep_pixels: bool = False) -> np.ndarray:
    """Return ``X`` as a C-contiguous, writable (n_samples, n_features) array of ``dtype``.

    Floating X is used as given (only converted to ``dtype``); uint8 X holds
    pixel intensities and is scaled by 1/255 (:func:`pixels_to_float`).  With
    ``keep_pixels``, uint8 X is returned as it is, for the kernels to scale as
    they read it (a quarter of the memory and memory traffic).

    A read-only X (the loader's images are) is copied: numba types a
    read-only array apart and would compile every kernel a second time for
    it, seconds each on a first run, to save a copy that takes milliseconds.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features per sample, but the model "
                         f"expects {n_features}")
    if X.dtype == np.uint8:
        if keep_pixels:
            return np.require(X, None, ["C", "W"])
        return np.ascontiguousarray(pixels_to_float(X, dtype))
    if X.dtype.kind != "f":
        raise ValueError(f"{name} must be floating point or uint8 pixels, got dtype {X.dtype}")
    X = np.require(X, dtype, ["C", "A", "W"])
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return X


def check_y(y, n_samples: int, n_classes: int, name: str = "y") -> np.ndarray:
    """Return ``y`` as int64 labels in ``0 .. n_classes-1``, shape (n_samples,)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n_samples} samples")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise ValueError(f"{name} must hold integer labels, got non-integer values")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} labels must lie in 0..{n_classes - 1}, "
                         f"got values from {y.min()} to {y.max()}")
    return np.ascontiguousarray(y, dtype=np.int64)
