"""A register-tiled multiply-accumulate, written in LLVM IR so its accumulators stay in registers.

Both big products of a training step are sums of outer products:

- forward:  A[i, j]  = sum_d  Xb[i, d] * W1[d, j]      (rows i = samples,  sum over features)
- backward: W1[d, j] -= lr * sum_i Xb[i, d] * dA[i, j]  (rows d = features, sum over samples)

and both are computed by one operation, a tile of ``rows`` x ``cols`` SIMD vectors::

    out[o_off + s*o_ss + l] = beta * out[...] + gamma * sum_k a[a_off + s*a_ss + k*a_sk]
                                                               * b[b_off + k*b_sk + l]

for s < rows and l < cols * lanes.  Each step of k loads ``cols`` vectors of b,
broadcasts ``rows`` scalars of a, and does rows * cols fused multiply-adds into
accumulators that live in registers for the whole sum.  Written as plain Numba
loops, LLVM kept such accumulators in memory or spilled them (a 4x4 scalar tile ran
at 2/3 of a 4x2 one, and 8x8 or 6x16 tiles left to the SLP vectoriser at a third);
emitting the vector IR directly gives the tile AVX2 asks for: 6 rows x 2 vectors is
12 accumulators + 2 operands + 1 broadcast of the 16 ymm registers.

``lanes`` is one vector of the dtype: a 32-byte vector holds 8 float32 (4 float64),
a 64-byte one 16 (8).  The IR is portable and LLVM splits it on machines with
narrower vectors.  Which tiles the kernels use depends on the target's width
(:mod:`fastsoftmax.kernels.simd`): with AVX-512's 32 registers, 12 rows x 2 64-byte
vectors is 24 accumulators + 2 operands + 1 broadcast.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

ROWS = 6  # rows of a tile: samples in the forward pass, features in the backward pass
MID_ROWS = 8  # rows of the tiles that finish a strip of tall (2 ROWS) ones: 32 = 12 + 12 + 8
QUAD_ROWS = 4  # and of those that finish 4 rows at full speed, where 2-row ones run at half
NARROW = 32  # bytes of an AVX2 vector: every width's tiles finish a row with these


def _vectors(builder, context, dtype, vector_bytes):
    """The IR pieces every intrinsic here uses, for vectors of ``vector_bytes`` of dtype:
    (vector type, lanes, llvm.fmuladd on it, vector_at(ptr, offset) -> vector pointer)."""
    n_lanes = vector_bytes // (dtype.bitwidth // 8)
    vty = ir.VectorType(context.get_value_type(dtype), n_lanes)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty, vty, vty]),
        f"llvm.fmuladd.v{n_lanes}f{dtype.bitwidth}")

    def vector_at(ptr, off):
        return builder.bitcast(builder.gep(ptr, [off]), vty.as_pointer())

    return vty, n_lanes, fma, vector_at


def _make_tile(cols: int, rows: int = ROWS, vector_bytes: int = NARROW):
    @intrinsic
    def tile(typingctx, a, a_off, a_ss, a_sk, b, b_off, b_sk, k, out, o_off, o_ss, beta, gamma):
        # a, b, out: 1-D C-contiguous arrays of one float dtype; offsets and strides
        # in elements (int64); beta, gamma any real scalars, rounded to the dtype, or
        # both 1-D arrays of the dtype holding one value per column from the tile's
        # first (see column()).  beta == 0 means "overwrite": out is not read, so
        # uninitialised scratch (NaN) cannot leak in.
        dtype = a.dtype
        per_column = isinstance(beta, types.Array)
        if per_column != isinstance(gamma, types.Array):
            raise TypeError("tile: beta and gamma must both be scalars or both arrays")
        sig = types.void(a, a_off, a_ss, a_sk, b, b_off, b_sk, k, out, o_off, o_ss,
                         beta, gamma)

        def codegen(context, builder, signature, args):
            a, a_off, a_ss, a_sk, b, b_off, b_sk, k, out, o_off, o_ss, beta, gamma = args
            size = dtype.bitwidth // 8
            vty, n_lanes, fma, vector_at = _vectors(builder, context, dtype, vector_bytes)
            fty = vty.element
            i32 = ir.IntType(32)
            i64 = ir.IntType(64)
            a_ptr = context.make_array(signature.args[0])(context, builder, a).data
            b_ptr = context.make_array(signature.args[4])(context, builder, b).data
            o_ptr = context.make_array(signature.args[8])(context, builder, out).data
            splat_mask = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)

            def splat(x):
                v = builder.insert_element(ir.Constant(vty, ir.Undefined), x,
                                           ir.Constant(i32, 0))
                return builder.shuffle_vector(v, v, splat_mask)

            # Allocas in the entry block: LLVM's mem2reg turns them into registers.
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(vty, [0.0] * n_lanes))
                     for _ in range(cols)] for _ in range(rows)]
            with cgutils.for_range(builder, k) as loop:
                b_row = builder.add(b_off, builder.mul(loop.index, b_sk))
                bv = [builder.load(vector_at(b_ptr, builder.add(b_row, ir.Constant(i64, c * n_lanes))),
                                   align=size) for c in range(cols)]
                a_col = builder.add(a_off, builder.mul(loop.index, a_sk))
                for s in range(rows):
                    at = builder.add(a_col, builder.mul(ir.Constant(i64, s), a_ss))
                    x = splat(builder.load(builder.gep(a_ptr, [at])))
                    for c in range(cols):
                        acc = accs[s][c]
                        builder.store(builder.call(fma, [x, bv[c], builder.load(acc)]), acc)
            if per_column:
                # One coefficient per output column, the same for every row:
                # vectors of beta and gamma (1-D views starting at the tile's
                # first column).
                def coefs(arg, i):
                    ptr = context.make_array(signature.args[i])(context, builder, arg).data
                    return [builder.load(vector_at(ptr, ir.Constant(i64, c * n_lanes)),
                                         align=size) for c in range(cols)]
                vbetas, vgammas = coefs(beta, 11), coefs(gamma, 12)
                overwrites = [builder.fcmp_ordered("==", v, ir.Constant(vty, [0.0] * n_lanes))
                              for v in vbetas]
            else:
                beta = context.cast(builder, beta, signature.args[11], dtype)
                gamma = context.cast(builder, gamma, signature.args[12], dtype)
                overwrites = [builder.fcmp_ordered("==", beta, ir.Constant(fty, 0.0))] * cols
                vbetas, vgammas = [splat(beta)] * cols, [splat(gamma)] * cols
            for s in range(rows):
                row = builder.add(o_off, builder.mul(ir.Constant(i64, s), o_ss))
                for c in range(cols):
                    p = vector_at(o_ptr, builder.add(row, ir.Constant(i64, c * n_lanes)))
                    scaled = builder.fmul(vgammas[c], builder.load(accs[s][c]))
                    mixed = builder.call(fma, [vbetas[c], builder.load(p, align=size), scaled])
                    builder.store(builder.select(overwrites[c], scaled, mixed), p, align=size)
            return context.get_dummy_value()

        return sig, codegen

    return tile


def column(coef, j):
    """A tile's beta or gamma for the tile whose first column is j: ``coef`` itself
    when it is one scalar for every column, ``coef[j:]`` when it holds one value
    per column (compiled by numba; no Python implementation)."""
    raise NotImplementedError("column() runs only inside numba kernels")


@overload(column, inline="always")
def _column(coef, j):
    if isinstance(coef, types.Array):
        return lambda coef, j: coef[j:]
    return lambda coef, j: coef


# 32-byte tiles, the whole of the AVX2 design and the row tails of the AVX-512 one.
# Two widths: 2 vectors (16 float32 hidden units) for the bulk, 1 vector for the
# tail, so hidden sizes pad only to a multiple of 8 rather than 16.  The tail
# tile takes two row tiles at once where it can: with 6 rows it is bound by its
# 7 loads per 6 FMAs (a 40-unit layer ran at the speed of a 48-unit one).
tile2 = _make_tile(2)
tile1 = _make_tile(1)
tile1_tall = _make_tile(1, 2 * ROWS)
# Two-row tiles finish row counts that are even but not multiples of ROWS (the
# W2 update has one row per hidden unit, a multiple of 8).
tile2_short = _make_tile(2, 2)
tile1_short = _make_tile(1, 2)
tile2_quad = _make_tile(2, QUAD_ROWS)
tile1_mid = _make_tile(1, MID_ROWS)
tile1_quad = _make_tile(1, QUAD_ROWS)

# 64-byte tiles, the bulk of the AVX-512 design (32 registers: 12 x 2 fits).  Creating
# them costs nothing; numba generates a tile's code only where a kernel calls it.
ZMM = 64  # bytes of an AVX-512 vector, the bulk of a row in that design
zmm2_tall = _make_tile(2, 2 * ROWS, ZMM)
zmm2 = _make_tile(2, ROWS, ZMM)
zmm2_short = _make_tile(2, 2, ZMM)
zmm1_tall = _make_tile(1, 2 * ROWS, ZMM)
zmm1 = _make_tile(1, ROWS, ZMM)
zmm1_short = _make_tile(1, 2, ZMM)
zmm2_mid = _make_tile(2, MID_ROWS, ZMM)
zmm2_quad = _make_tile(2, QUAD_ROWS, ZMM)
zmm1_mid = _make_tile(1, MID_ROWS, ZMM)
zmm1_quad = _make_tile(1, QUAD_ROWS, ZMM)

# Interleaved partial sums per column: 4 FMA chains in flight, not one.  Part of what a
# column's sum is, not a knob: the combine below is (p0 + p1) + (p2 + p3).
NORM_PARTIALS = 4


@intrinsic
def square_sums(typingctx, w, rows, width, parts, sums):
    """Column sums of squares of a C-ordered (rows, width) matrix ``w`` (1-D view), in
    one pass over its rows in memory order.  For each column l < width:
    ``sums[l] = (p0 + p1) + (p2 + p3)``, ``p_i`` the sum in increasing r of
    ``w[r * width + l] ** 2`` (fused multiply-adds) over the rows r < rows with
    r % 4 == i, up to the reassociation the kernels' fastmath flags allow LLVM
    (numba sets them on every instruction of a kernel, these too: the combine's
    last bit measured otherwise in about a fifth of the columns).  Whatever LLVM
    makes of it, it makes of every lane: each column is summed by the same
    instructions wherever it sits, so a model's columns give the same sums alone
    and among a pack's.

    parts: scratch of >= 4 * width elements (overwritten); sums: >= width, out;
    w, parts, sums 1-D C-contiguous of one float dtype; rows, width int64, width a
    multiple of one NARROW vector.  The partial sums live in parts (L1): a pack's
    pack-layout W1 has more columns than registers, and reading it row by row, in the
    order it lies in memory, is what makes the pass cheap (per model and column
    strip, the pass strode across rows: docs/speed.md has what that cost).
    """
    dtype = w.dtype
    sig = types.void(w, rows, width, parts, sums)

    def codegen(context, builder, signature, args):
        w, rows, width, parts, sums = args
        size = dtype.bitwidth // 8
        vty, n_lanes, fma, vector_at = _vectors(builder, context, dtype, NARROW)
        i64 = ir.IntType(64)
        w_ptr = context.make_array(signature.args[0])(context, builder, w).data
        p_ptr = context.make_array(signature.args[3])(context, builder, parts).data
        s_ptr = context.make_array(signature.args[4])(context, builder, sums).data
        lanes = ir.Constant(i64, n_lanes)
        vectors = builder.sdiv(width, lanes)

        def part_at(i, v):
            return vector_at(p_ptr, builder.add(builder.mul(ir.Constant(i64, i), width),
                                                builder.mul(v, lanes)))

        for i in range(NORM_PARTIALS):
            with cgutils.for_range(builder, vectors) as loop:
                builder.store(ir.Constant(vty, [0.0] * n_lanes), part_at(i, loop.index), align=size)

        def add_squares(i, r):
            row = builder.mul(r, width)
            with cgutils.for_range(builder, vectors) as loop:
                p = part_at(i, loop.index)
                x = builder.load(vector_at(w_ptr, builder.add(row, builder.mul(loop.index, lanes))),
                                 align=size)
                builder.store(builder.call(fma, [x, x, builder.load(p, align=size)]), p, align=size)

        step = ir.Constant(i64, NORM_PARTIALS)
        groups = builder.sdiv(rows, step)
        with cgutils.for_range(builder, groups) as loop:
            first = builder.mul(loop.index, step)
            for i in range(NORM_PARTIALS):
                add_squares(i, builder.add(first, ir.Constant(i64, i)))
        tail = builder.mul(groups, step)
        for i in range(NORM_PARTIALS - 1):  # rows past the last multiple of 4, in order
            r = builder.add(tail, ir.Constant(i64, i))
            with builder.if_then(builder.icmp_signed("<", r, rows)):
                add_squares(i, r)
        with cgutils.for_range(builder, vectors) as loop:
            p = [builder.load(part_at(i, loop.index), align=size) for i in range(NORM_PARTIALS)]
            total = builder.fadd(builder.fadd(p[0], p[1]), builder.fadd(p[2], p[3]))
            builder.store(total, vector_at(s_ptr, builder.mul(loop.index, lanes)), align=size)
        return context.get_dummy_value()

    return sig, codegen
