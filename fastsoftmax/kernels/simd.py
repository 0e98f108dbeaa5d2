"""Which SIMD width the kernels are built for: the compile target's widest, or FASTSOFTMAX_SIMD.

Two designs of the register tiles exist (:mod:`fastsoftmax.kernels._tile`):

- ``"avx2"``: 32-byte vectors, 16 vector registers (AVX2; also what any other
  CPU gets, where LLVM splits the vectors to the host's width);
- ``"avx512"``: 64-byte vectors for the bulk of a row and 32 registers, room
  for tiles of 12 rows x 2 vectors; a 32-byte tile finishes rows whose width is
  not a multiple of 64 bytes, so hidden sizes still pad only to 8 float32.

Each design is a function of its own (``kernels.products.DESIGNS``), and every
kernel takes the tiles as a function pointer, so the width picks which design the
kernels are handed; the kernels themselves are the same code for both.  The width
follows the features numba compiles for: ``"avx512"`` where they include
``avx512f``, else ``"avx2"``.  Numba keys its cache on the target CPU's name and
features, so a cache filled on one CPU never hands its code to another.

``FASTSOFTMAX_SIMD`` overrides it, read once, as fastsoftmax is imported:

- ``avx2`` on a CPU with AVX-512 turns AVX-512 off in numba's target (every
  ``avx512*`` feature), so the kernels are built as on an AVX2 machine, no
  AVX-512 instruction anywhere, and cached apart.  This must happen before
  numba compiles anything in the process; if it already has, the import fails
  and says so.
- ``avx512`` requires a target with ``avx512f``.  To build (not run) that path
  on a machine without it, name a target: ``NUMBA_CPU_NAME=znver4
  NUMBA_CPU_FEATURES=+avx512f,...`` (see tests/test_simd.py).
- ``auto`` or unset: the target's widest.
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm
import numba
from numba.core.registry import cpu_target

ENV = "FASTSOFTMAX_SIMD"
WIDTHS = {"avx2": 32, "avx512": 64}  # name -> bytes of the widest vector the tiles use


class SimdError(RuntimeError):
    """FASTSOFTMAX_SIMD asks for something the compile target cannot give."""


def parse_features(features: str) -> frozenset[str]:
    """The enabled features of an LLVM feature string ("+avx2,-avx512f,...")."""
    return frozenset(f[1:] for f in features.split(",") if f.startswith("+"))


def without_avx512(features: str) -> str:
    """The LLVM feature string with every AVX-512 feature (and those that imply it) off."""
    out = []
    for f in features.split(","):
        sign, name = f[:1], f[1:]
        if sign in ("+", "-") and (name.startswith(("avx512", "avx10", "amx-avx512"))
                                   or name == "evex512"):
            f = "-" + name
        out.append(f)
    return ",".join(out)


def choose(request: str | None, features: frozenset[str]) -> str:
    """The width to build for, given FASTSOFTMAX_SIMD's value and the target's features.

    Raises ValueError for a value that is not a width, SimdError for a width the
    target lacks.
    """
    value = (request or "auto").strip().lower()
    if value not in ("auto", *WIDTHS):
        raise ValueError(f"{ENV}={request!r}: expected one of auto, {', '.join(WIDTHS)}")
    wide = "avx512f" in features
    if value == "auto":
        return "avx512" if wide else "avx2"
    if value == "avx512" and not wide:
        raise SimdError(
            f"{ENV}=avx512, but numba compiles for a CPU without avx512f "
            f"({numba.config.CPU_NAME or llvm.get_host_cpu_name()}).  Unset {ENV} to use this "
            f"CPU's width, or, to build the AVX-512 kernels without running them, set "
            f"NUMBA_CPU_NAME and NUMBA_CPU_FEATURES to an AVX-512 target")
    if value == "avx2" and wide:
        raise SimdError(
            f"{ENV}=avx2, but numba's target already includes avx512f: it was set before "
            f"fastsoftmax was imported (NUMBA_CPU_FEATURES, or numba compiled something "
            f"first).  Import fastsoftmax before compiling anything else with numba, or set "
            f"NUMBA_CPU_FEATURES without AVX-512")
    return value


def _target_features() -> str:
    """The feature string numba compiles for (this creates numba's CPU target if needed)."""
    return cpu_target.target_context.codegen().magic_tuple()[2]


def _select() -> str:
    request = os.environ.get(ENV)
    wants_avx2 = (request or "").strip().lower() == "avx2"
    # Turning AVX-512 off works only before numba's CPU target exists, and only
    # when the user has not named the target's features themselves.
    if wants_avx2 and numba.config.CPU_FEATURES is None and \
            "_toplevel_target_context" not in vars(cpu_target):
        numba.config.CPU_FEATURES = without_avx512(llvm.get_host_cpu_features().flatten())
    return choose(request, parse_features(_target_features()))


WIDTH = _select()
VECTOR_BYTES = WIDTHS[WIDTH]
