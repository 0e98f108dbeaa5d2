"""A software prefetch (llvm.prefetch) callable from Numba kernels.

Minibatch rows are read in a random order, which the hardware prefetchers
cannot predict: each row of the training set came from DRAM at the latency of
a miss per cache line, and gathering a minibatch took a sixth of an epoch.
Asking for the next minibatch's rows while the current one trains hides that
latency.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CACHE_LINE = 64  # bytes


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint that ``arr[index]`` (arr 1-D, C-contiguous) will be read soon; no effect on results."""
    sig = types.void(arr, index)

    def codegen(context, builder, signature, args):
        a, i = args
        ptr = context.make_array(signature.args[0])(context, builder, a).data
        addr = builder.bitcast(builder.gep(ptr, [i]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [addr.type, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        # read, locality 2 (keep in L2 and outer caches), data cache
        builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
