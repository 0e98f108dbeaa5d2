"""exp() for the softmax, in plain arithmetic that LLVM vectorises.

``np.exp`` on float32 compiles to a call of the C library's ``expf`` for each element: the
softmax's loop over the classes cannot be vectorised around a call.  Here float32 exp is
range reduction, a polynomial and a power of two built from its bits (Cephes' expf), none
of it a call.  Under the kernels' fastmath flags, which let LLVM regroup the reduction and
the polynomial, it is within 8 ulp of the true value (tests/test_exp.py), where the float32 reference tolerance is about 800.  float64
keeps ``np.exp``: its agreement with the reference is held to 1e-10, and a polynomial for
that would cost as much as the call.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

LOG2E = np.float32(1.44269504088896341)
# ln 2 in two parts, the first with few enough bits that n * LN2_HI is exact
LN2_HI = np.float32(0.693359375)
LN2_LO = np.float32(-2.12194440e-4)
# exp(x) is 0 in float32 below about -103.97 (2^-150); x is clamped here, above that
LOWEST = np.float32(-104.0)
# Cephes expf's polynomial for exp(r) = 1 + r + r^2 P(r), |r| <= ln 2 / 2
P0 = np.float32(1.9875691500e-4)
P1 = np.float32(1.3981999507e-3)
P2 = np.float32(8.3334519073e-3)
P3 = np.float32(4.1665795894e-2)
P4 = np.float32(1.6666665459e-1)
P5 = np.float32(5.0000001201e-1)
ONE = np.float32(1.0)
HALF = np.float32(0.5)


@intrinsic
def _pow2(typingctx, n):
    """2^n for a float32 integer n in [-126, 127], from its bits: int32 arithmetic, which
    vectorises on AVX2 (a float to int64 conversion does not)."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        exponent = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(exponent, ir.Constant(i32, 23)), ir.FloatType())

    return types.float32(types.float32), codegen


def exp_nonpositive(x):
    """exp(x) for x <= 0 of a float dtype (the softmax's z - max z); float32 without a
    call (see the module's docstring), float64 as np.exp.  Numba only."""
    raise NotImplementedError("exp_nonpositive runs only inside numba kernels")


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive(x):
    if x != types.float32:
        return lambda x: np.exp(x)

    def exp32(x):
        x = max(x, LOWEST)
        n = np.floor(x * LOG2E + HALF)
        r = x - n * LN2_HI - n * LN2_LO
        p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5
        p = p * (r * r) + r + ONE
        # 2^n as two normal powers of two (n >= -150 reaches the subnormals)
        half = np.floor(n * HALF)
        return p * _pow2(half) * _pow2(n - half)

    return exp32
