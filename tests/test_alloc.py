"""The kernels' allocation intrinsics against numba's own np.empty and np.zeros."""

import numba
import numpy as np
import pytest

from fastsoftmax.kernels._alloc import ALIGN, empty, zeros


@numba.njit
def _both_1d(n, like):
    return empty(n, like.dtype), zeros(n, like.dtype)


@numba.njit
def _both_2d(r, c, like):
    return empty((r, c), like.dtype), zeros((r, c), like.dtype)


@numba.njit
def _both_3d(a, b, c, like):
    return empty((a, b, c), like.dtype), zeros((a, b, c), like.dtype)


@numba.njit
def _numbas_1d(n, like):
    return np.zeros(n, like.dtype)


@numba.njit
def _numbas_2d(r, c, like):
    return np.zeros((r, c), like.dtype)


@numba.njit
def _numbas_3d(a, b, c, like):
    return np.zeros((a, b, c), like.dtype)


@numba.njit
def _by_scalar_type(n):
    return empty(n, np.int64), zeros(n, np.bool_), zeros((n, 2), np.float32)


@numba.njit
def _zeros_after_garbage(n, rounds):
    """True if every zeros() of n float64 is all zero, each allocated where an array just
    filled with 7s was freed (the allocator hands such blocks back)."""
    ok = True
    for _ in range(rounds):
        junk = empty(n, np.float64)
        for i in range(n):
            junk[i] = 7.0
        junk = junk[:0]  # drop the only reference to the 7s
        fresh = zeros(n, np.float64)
        for i in range(n):
            ok = ok and fresh[i] == 0.0
    return ok


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (0, 7), (2, 3, 5), (0, 0, 0)])
def test_shapes_dtypes_and_layout_are_numbas(shape, dtype):
    like = np.zeros(1, dtype)
    both = {1: _both_1d, 2: _both_2d, 3: _both_3d}[len(shape)](*shape, like)
    want = {1: _numbas_1d, 2: _numbas_2d, 3: _numbas_3d}[len(shape)](*shape, like)
    assert not both[1].any()
    for a in both:
        assert (a.shape, a.dtype, a.strides) == (want.shape, want.dtype, want.strides)
        assert a.flags.c_contiguous and a.flags.writeable
        assert type(a.base) is type(want.base)  # owned by numba's runtime, as numba's own
        a[...] = 1  # every element is there to write
        assert (a == 1).all()
    both[1][...] = 0
    np.testing.assert_array_equal(both[1], np.zeros(shape, dtype))


@numba.njit
def _addresses(sizes):
    """The data address of an empty() and a zeros() of each size, allocated in turn
    (sizes in float32 elements, the odd ones leave the next block misaligned if the
    allocator only aligns to a vector)."""
    out = np.empty((len(sizes), 2), np.int64)
    for i in range(len(sizes)):
        a, b = empty(sizes[i], np.float32), zeros((sizes[i], 3), np.float32)
        out[i, 0], out[i, 1] = a.ctypes.data, b.ctypes.data
    return out


def test_data_starts_on_a_cache_line():
    # numba's own np.empty gives 32-byte alignment, which this platform satisfies 32
    # bytes into a line; the tiles' 16-float rows then straddle two lines
    assert ALIGN == 64
    addresses = _addresses(np.array([1, 7, 8, 13, 784 * 128, 3, 160 * 128 + 1]))
    assert (addresses % ALIGN == 0).all(), addresses % ALIGN


def test_scalar_types_give_their_dtypes():
    a, b, c = _by_scalar_type(6)
    assert (a.dtype, b.dtype, c.dtype) == (np.int64, np.bool_, np.float32)
    assert a.shape == b.shape == (6,) and c.shape == (6, 2)
    assert not b.any() and not c.any()


def test_zeros_are_zero_where_garbage_was():
    assert _zeros_after_garbage(4096, 50)


def test_a_float_shape_is_refused_when_compiling():
    @numba.njit
    def bad(n):
        return zeros(n, np.float32)

    with pytest.raises(numba.core.errors.TypingError, match="zeros takes an integer"):
        bad(2.5)
