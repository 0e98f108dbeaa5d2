"""The kernels' array views (fastsoftmax.kernels._views): the same elements as ravel/reshape, the
same memory, an owner kept alive, and non-contiguous input refused."""

import gc

import numba
import numpy as np
import pytest

from fastsoftmax.kernels._views import flat_view, grid_view


@numba.njit
def _flat(a):
    return flat_view(a)


@numba.njit
def _grid(a, rows, cols):
    return grid_view(a, rows, cols)


@numba.njit
def _fresh_grid(rows, cols):
    # the base is allocated here: only the view leaves, holding it
    return grid_view(np.arange(rows * cols + 3, dtype=np.float32) * np.float32(2), rows, cols)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_flat_view_is_ravel_over_the_same_memory(shape, dtype):
    a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    v = _flat(a)
    assert v.shape == (a.size,) and v.dtype == a.dtype
    np.testing.assert_array_equal(v, a.ravel())
    if a.size:
        v[-1] = 9
        assert a.flat[-1] == 9  # a view, not a copy


@pytest.mark.parametrize("rows, cols, extra", [(4, 6, 0), (4, 6, 5), (1, 1, 0), (0, 3, 2)])
def test_grid_view_is_reshape_of_the_first_rows_times_cols(rows, cols, extra):
    a = np.arange(rows * cols + extra, dtype=np.float64)
    g = _grid(a, rows, cols)
    assert g.shape == (rows, cols) and g.flags.c_contiguous
    np.testing.assert_array_equal(g, a[:rows * cols].reshape(rows, cols))
    if rows * cols:
        g[rows - 1, cols - 1] = -1
        assert a[rows * cols - 1] == -1
    # and a view of a row of a 2-D array, as the kernels take one
    b = np.arange(2 * (rows * cols + extra), dtype=np.float32).reshape(2, -1)
    np.testing.assert_array_equal(_grid(b[1], rows, cols), b[1, :rows * cols].reshape(rows, cols))


def test_a_view_keeps_the_array_it_views_alive():
    g = _fresh_grid(5, 4)
    gc.collect()
    np.testing.assert_array_equal(g, (np.arange(20, dtype=np.float32) * 2).reshape(5, 4))
    del g
    gc.collect()


def test_non_contiguous_input_is_refused_at_compile_time():
    a = np.zeros((4, 6), np.float32)
    refused = (TypeError, numba.core.errors.TypingError)  # numba passes the TypeError on
    with pytest.raises(refused, match="C-contiguous"):
        _flat(a[:, ::2])
    with pytest.raises(refused, match="1-D C-contiguous"):
        _grid(a, 2, 12)
