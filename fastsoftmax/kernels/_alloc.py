"""New arrays for the kernels, without numba's ``np.empty`` and ``np.zeros`` overloads.

Numba implements ``np.empty``, ``np.zeros``, ``np.ones`` and ``np.full`` as overloads:
each (shape type, dtype) a caller uses becomes a function of its own that numba types,
lowers and optimises at a fixed cost, and ``np.zeros`` is ``np.empty`` plus a fill
method, three such functions; a first run of the sweep compiled about twenty of them in
each of its two processes.  These intrinsics emit
numba's own allocation in place instead; the kernels fill arrays of ones or of a
constant with a loop.
"""

from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.core.typing.npydecl import parse_dtype, parse_shape
from numba.extending import intrinsic
from numba.np.arrayobj import _parse_shape, get_itemsize, make_array, populate_array

# Bytes the data of every new array is aligned to: a cache line.  Numba aligns to 32,
# which on this platform puts the data 32 bytes into a line, so a two-vector tile's
# 16 float32 columns of a row (64 bytes) lay across two lines; aligned, every load of
# the two big products reads one line (docs/speed.md has the A/B).
ALIGN = 64


def _array_type(name, shape, dtype):
    """The C-ordered array type ``name(shape, dtype)`` returns, or a TypingError."""
    nb_dtype, ndim = parse_dtype(dtype), parse_shape(shape)
    if nb_dtype is None or ndim is None:
        raise TypingError(f"{name} takes an integer or a tuple of integers and a dtype, "
                          f"not {shape} and {dtype}")
    return types.Array(nb_dtype, ndim, "C")


def _allocate(context, builder, signature, args):
    """A C-ordered array of the return type and the shape in args[0], its data aligned
    to ALIGN bytes: numba's own allocation (the runtime's aligned MemInfo, a MemoryError
    when it fails) without its per-dtype alignment, which puts the data 32 bytes into a
    cache line on this platform."""
    arrtype = signature.return_type
    shapes = _parse_shape(context, builder, signature.args[0], args[0])
    intp = context.get_value_type(types.intp)
    itemsize = context.get_constant(types.intp, get_itemsize(context, arrtype))
    nbytes, overflow = itemsize, cgutils.false_bit
    for size in shapes:
        product = builder.smul_with_overflow(nbytes, size)
        nbytes = builder.extract_value(product, 0)
        overflow = builder.or_(overflow, builder.extract_value(product, 1))
    with builder.if_then(overflow, likely=False):
        context.call_conv.return_user_exc(builder, ValueError, ("array is too big",))
    strides = [itemsize]
    for size in reversed(shapes[1:]):
        strides.append(builder.mul(strides[-1], size))
    meminfo = context.nrt.meminfo_alloc_aligned(builder, nbytes, ALIGN)
    data = context.nrt.meminfo_data(builder, meminfo)
    ary = make_array(arrtype)(context, builder)
    populate_array(ary, data=builder.bitcast(data, context.get_data_type(arrtype.dtype).as_pointer()),
                   shape=cgutils.pack_array(builder, shapes, ty=intp),
                   strides=cgutils.pack_array(builder, list(reversed(strides)), ty=intp),
                   itemsize=itemsize, meminfo=meminfo)
    return ary


@intrinsic
def empty(typingctx, shape, dtype):
    """``np.empty(shape, dtype)``: shape an integer or a tuple of integers, dtype a
    NumPy scalar type (``np.int64``) or an array's ``.dtype``."""
    rtype = _array_type("empty", shape, dtype)

    def codegen(context, builder, signature, args):
        return _allocate(context, builder, signature, args)._getvalue()

    return rtype(shape, dtype), codegen


@intrinsic
def zeros(typingctx, shape, dtype):
    """``np.zeros(shape, dtype)``, arguments as for :func:`empty`."""
    rtype = _array_type("zeros", shape, dtype)

    def codegen(context, builder, signature, args):
        ary = _allocate(context, builder, signature, args)
        cgutils.memset(builder, ary.data, builder.mul(ary.itemsize, ary.nitems), 0)
        return ary._getvalue()

    return rtype(shape, dtype), codegen
