"""New arrays for the kernels, without numba's ``np.empty`` and ``np.zeros`` overloads.

Numba implements ``np.empty``, ``np.zeros``, ``np.ones`` and ``np.full`` as overloads:
each (shape type, dtype) a caller uses becomes a function of its own that numba types,
lowers and optimises, with its fixed cost of about 0.1 s, and ``np.zeros`` is
``np.empty`` plus a fill method, three such functions.  A first run of the sweep
compiled about twenty of them in each of its two processes.  These intrinsics emit
numba's own allocation in place instead; the kernels fill arrays of ones or of a
constant with a loop.
"""

from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.core.typing.npydecl import parse_dtype, parse_shape
from numba.extending import intrinsic
from numba.np.arrayobj import _empty_nd_impl, _parse_shape


def _array_type(name, shape, dtype):
    """The C-ordered array type ``name(shape, dtype)`` returns, or a TypingError."""
    nb_dtype, ndim = parse_dtype(dtype), parse_shape(shape)
    if nb_dtype is None or ndim is None:
        raise TypingError(f"{name} takes an integer or a tuple of integers and a dtype, "
                          f"not {shape} and {dtype}")
    return types.Array(nb_dtype, ndim, "C")


def _allocate(context, builder, signature, args):
    shapes = _parse_shape(context, builder, signature.args[0], args[0])
    return _empty_nd_impl(context, builder, signature.return_type, shapes)


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
