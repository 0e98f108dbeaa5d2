"""What a result was measured on: the CPU, its SIMD flags and the package versions.

A sweep's timings and a report's figures mean something only with the
machine named, so the sweep stores :func:`describe` in ``best.json``.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from .cpus import available_cpus

# The flags that decide which vector code a CPU can run, widest last.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, tuple[str, ...]]:
    """(model name, SIMD flags of SIMD_FLAGS present) of this machine's first CPU.

    Where /proc/cpuinfo does not exist (macOS, Windows), the model is
    platform.processor() or "unknown" and the flags are empty.
    """
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return platform.processor() or "unknown", ()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or "unknown", tuple(f for f in SIMD_FLAGS if f in flags)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe(workers: int | None = None, kernels_width: str | None = None) -> dict:
    """The machine and software a run used, as a JSON-ready dict; ``kernels_width`` is the
    SIMD width the kernels were built for (fastsoftmax.kernels.simd.WIDTH)."""
    model, flags = cpu_model()
    cpus = available_cpus()
    out = {"cpu": model, "simd": list(flags), "kernels_width": kernels_width,
           "cpus": os.cpu_count(),
           "cpus_usable": cpus.count, "platform": platform.platform(),
           "python": sys.version.split()[0]}
    if workers is not None:
        out["workers"] = workers
    for package in ("fastsoftmax", "numpy", "numba", "llvmlite"):
        out[package] = _version(package)
    return out
