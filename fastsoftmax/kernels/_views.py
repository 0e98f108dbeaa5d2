"""Views of C-contiguous arrays for the kernels, without numba's generic reshape.

Numba lowers every ``reshape`` (and ``ravel``, which it implements as one) to a call of
its no-copy reshape routine with the code to raise its errors, at each call site.  The
kernels only ever view a C-contiguous block as flat or as rows x cols of a size they
have just computed, so these build the view's header directly: same data, same owner.
"""

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


def _view(context, builder, src_type, src, dst_type, shape):
    """A dst_type header over src's data and owner with ``shape`` (C strides)."""
    ary = make_array(src_type)(context, builder, src)
    out = make_array(dst_type)(context, builder)
    itemsize = ary.itemsize
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.insert(0, step)
        step = builder.mul(step, n)
    populate_array(out, data=ary.data, shape=shape, strides=strides, itemsize=itemsize,
                   meminfo=ary.meminfo, parent=ary.parent)
    return impl_ret_borrowed(context, builder, dst_type, out._getvalue())


@intrinsic
def flat_view(typingctx, a):
    """``a.ravel()`` for a C-contiguous array: a 1-D view of all its elements."""
    if not isinstance(a, types.Array) or a.layout != "C":
        raise TypeError(f"flat_view takes a C-contiguous array, not {a}")
    rtype = a.copy(ndim=1, layout="C")

    def codegen(context, builder, signature, args):
        ary = make_array(a)(context, builder, args[0])
        dims = cgutils.unpack_tuple(builder, ary.shape, a.ndim)
        n = dims[0]
        for d in dims[1:]:
            n = builder.mul(n, d)
        return _view(context, builder, a, args[0], rtype, [n])

    return rtype(a), codegen


@intrinsic
def grid_view(typingctx, a, rows, cols):
    """The first rows * cols elements of the 1-D C-contiguous ``a`` as a (rows, cols)
    C-ordered view; the caller guarantees ``a`` holds that many."""
    if not isinstance(a, types.Array) or a.layout != "C" or a.ndim != 1:
        raise TypeError(f"grid_view takes a 1-D C-contiguous array, not {a}")
    rtype = a.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        _, r, c = args
        r = context.cast(builder, r, signature.args[1], types.intp)
        c = context.cast(builder, c, signature.args[2], types.intp)
        return _view(context, builder, a, args[0], rtype, [r, c])

    return rtype(a, rows, cols), codegen
