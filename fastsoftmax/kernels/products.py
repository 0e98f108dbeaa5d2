"""The matrix products: every product of a step is one call of :func:`_tiles`, which
covers an output with the register tiles of :mod:`._tile` in the design of the SIMD
width :mod:`.simd` chose (:data:`DESIGNS`: one function per width).

Kernels never link _tiles by name: they take it as a function pointer
(:func:`tiles_pointer`), so its code is optimised and emitted once, not again
in each kernel that calls it.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba.core import types

from ._tile import (MID_ROWS, NARROW, QUAD_ROWS, ROWS, ZMM, column, tile1, tile1_mid,
                    tile1_quad, tile1_short, tile1_tall, tile2, tile2_quad, tile2_short, zmm1,
                    zmm1_mid, zmm1_quad, zmm1_short, zmm1_tall, zmm2, zmm2_mid, zmm2_quad,
                    zmm2_short, zmm2_tall)
from .jit import jit
from .simd import WIDTH


def _strip(tall, mid, tile, quad, short):
    """A column strip's row loop over the tiles of one width, as a kernel: ``tall``
    takes 2 ROWS rows at a time where they fit; the rest (an even number below
    2 ROWS) goes to ``mid`` (8 rows), ``tile`` (ROWS), ``quad`` (4) and ``short`` (2)
    tiles, each used at most once, except ``short`` for 10 = 8 + 2.

    strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss, beta, gamma) covers the
    tiles' columns from j for r < n_rows (even).  The few-row tiles keep fewer
    accumulators than the FMA units can overlap, so a minibatch of 32 runs
    12 + 12 + 8 rows rather than 12 + 12 + 6 + 2.  Numba takes no function
    arguments, so each width's strip is built from its own tiles here; inlined
    into _tiles, never compiled (or cached) alone.
    """
    @jit(inline="always", cache=False)
    def strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss, beta, gamma):
        r = 0
        while r + 2 * ROWS <= n_rows:
            tall(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += 2 * ROWS
        if r + MID_ROWS <= n_rows:
            mid(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += MID_ROWS
        if r + ROWS <= n_rows:
            tile(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += ROWS
        if r + QUAD_ROWS <= n_rows:
            quad(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += QUAD_ROWS
        while r < n_rows:
            short(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss, beta, gamma)
            r += 2

    return strip


# One 32-byte vector wide, the last strip of a row in both designs: with 6 rows this
# tile is bound by its 7 loads per 6 FMAs, so it takes 12 where they fit.
_narrow_strip = _strip(tile1_tall, tile1_mid, tile1, tile1_quad, tile1_short)
# The AVX-512 design's 64-byte strips, two vectors and one.
_zmm2_strip = _strip(zmm2_tall, zmm2_mid, zmm2, zmm2_quad, zmm2_short)
_zmm1_strip = _strip(zmm1_tall, zmm1_mid, zmm1, zmm1_quad, zmm1_short)


@jit
def _tiles_avx2(a, a_ss, a_sk, n_rows, b, b_sk, k, out, o_ss, width, beta, gamma):
    """out[r, j] = beta out[r, j] + gamma sum_k a[r a_ss + k a_sk] b[k b_sk + j].

    a, b, out: 1-D views of C-ordered arrays (offsets and strides in elements);
    r < n_rows (even), j < width (a multiple of 32 bytes).  beta, gamma: scalars,
    or 1-D arrays of one value per output column (j < width).  The AVX2 design:
    two-vector tiles cover the width, a one-vector tile the rest; rows go ROWS
    at a time, then 4, then 2 (the one-vector strip: see _strip).  Columns are
    the outer loop so one block of b serves every row tile while it is in cache.
    """
    lanes = NARROW // a.itemsize
    # ROWS-row tiles, then 4-row ones (8 accumulators keep both FMA units
    # busy; a 2-row tile's 4 do not): 32 rows are 4 x 6 + 2 x 4, not 5 x 6 + 2.
    sixes = n_rows - n_rows % ROWS
    if n_rows % ROWS == 2 and sixes >= ROWS:
        sixes -= ROWS
    j = 0
    while j + 2 * lanes <= width:
        for r in range(0, sixes, ROWS):
            tile2(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                  column(beta, j), column(gamma, j))
        r = sixes
        while r + QUAD_ROWS <= n_rows:
            tile2_quad(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                       column(beta, j), column(gamma, j))
            r += QUAD_ROWS
        if r < n_rows:
            tile2_short(a, r * a_ss, a_ss, a_sk, b, j, b_sk, k, out, r * o_ss + j, o_ss,
                        column(beta, j), column(gamma, j))
        j += 2 * lanes
    if j < width:
        _narrow_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                      column(beta, j), column(gamma, j))


@jit
def _tiles_avx512(a, a_ss, a_sk, n_rows, b, b_sk, k, out, o_ss, width, beta, gamma):
    """As :func:`_tiles_avx2`, in the AVX-512 design: 64-byte vectors for the bulk.

    Two-vector tiles (32 float32 columns) take 12 rows at a time, which
    AVX-512's 32 registers hold; then one 64-byte vector; then, for widths
    that are an odd multiple of 32 bytes (hidden sizes pad only to 8
    float32), the 32-byte strip of the AVX2 design.
    """
    lanes = ZMM // a.itemsize
    j = 0
    while j + 2 * lanes <= width:
        _zmm2_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                     column(beta, j), column(gamma, j))
        j += 2 * lanes
    if j + lanes <= width:
        _zmm1_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                     column(beta, j), column(gamma, j))
        j += lanes
    if j < width:
        _narrow_strip(a, a_ss, a_sk, n_rows, b, j, b_sk, k, out, o_ss,
                      column(beta, j), column(gamma, j))


# Both designs are defined everywhere and compiled only when called: the kernels take
# the tiles as a pointer of one signature, so either design runs in the same compiled
# kernels (the tests run both on every host, on its own target).
DESIGNS = {"avx2": _tiles_avx2, "avx512": _tiles_avx512}
_tiles = DESIGNS[WIDTH]  # the design for the width simd chose: what every kernel gets


def tiles_types(dtype) -> tuple:
    """The argument types of every kernel's _tiles calls for models of ``dtype``: 1-D
    C-ordered views of a, b and out, int64 offsets, strides and sizes, and one beta
    and gamma per column (_overwrite_coefs).  The kernels take _tiles as a function
    pointer of this signature (:func:`tiles_pointer`), so it has no other."""
    vector = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    i64 = types.int64
    return (vector, i64, i64, i64, vector, i64, i64, vector, i64, i64, vector, vector)


@functools.lru_cache(maxsize=None)
def tiles_pointer(dtype) -> types.FunctionType:
    """The type under which every kernel takes _tiles for models of ``dtype``: a function
    pointer (its last argument, ``tiles``), not a callee called by name.

    Called by name, a jitted function's code is linked into each caller, and numba
    optimises and emits it again there: _tiles, the largest block, was compiled three
    times on a first run (alone, in the epoch kernel and in the evaluation kernel).  As a
    pointer it is compiled once, and every kernel calls that machine code.
    """
    return types.FunctionType(types.none(*tiles_types(np.dtype(dtype))))


def with_tiles(kernel, dtype, *args):
    """``kernel(*args, _tiles)``, _tiles passed as the pointer of tiles_pointer(dtype).

    Called through the dispatcher, numba would type the _tiles argument as the callee
    itself and compile the kernel again with it linked in; the entry point of the
    signature that takes the pointer (compiled or looked up here) converts it instead.
    """
    entry = kernel.compile(tuple(numba.typeof(a) for a in args) + (tiles_pointer(dtype),))
    return entry(*args, _tiles)

