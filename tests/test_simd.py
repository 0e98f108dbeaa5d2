"""The SIMD width: chosen from numba's target, overridden by FASTSOFTMAX_SIMD, cached apart;
each design's tiles built for an AVX-512 target and for one without, and both designs
training the same bits (tests/test_kernels.py checks each against the reference)."""

import os
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import simd
from fastsoftmax.kernels import products
from fastsoftmax.host.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
HOST_HAS_AVX512 = "avx512f" in cpu_model()[1]
AVX512_FEATURES = ("avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd")


def _host_features_with_avx512() -> str:
    """This host's LLVM feature string with AVX-512 turned on: a target to build for, not run."""
    features = llvm.get_host_cpu_features()
    for name in AVX512_FEATURES:
        features[name] = True
    return features.flatten()


def _python(code: str, tmp_path, cache="numba-cache", **env) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter with env's variables and a private numba cache
    (tmp_path / cache), or the environment's own where cache is None."""
    full = dict(os.environ)
    if cache is not None:
        full["NUMBA_CACHE_DIR"] = str(tmp_path / cache)
    for key in ("FASTSOFTMAX_SIMD", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        full.pop(key, None)
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=600)


def test_auto_takes_the_targets_widest():
    assert simd.choose(None, frozenset({"avx2", "fma"})) == "avx2"
    assert simd.choose("", frozenset({"avx2", "fma", "avx512f"})) == "avx512"
    assert simd.choose(" Auto ", frozenset({"avx2", "avx512f"})) == "avx512"
    assert simd.choose("auto", frozenset({"neon"})) == "avx2"  # 32-byte IR, split by LLVM


def test_an_explicit_width_is_honoured_when_the_target_has_it():
    assert simd.choose("AVX512", frozenset({"avx512f"})) == "avx512"
    assert simd.choose("avx2", frozenset({"avx2"})) == "avx2"


def test_a_bad_value_names_the_variable():
    with pytest.raises(ValueError, match=r"FASTSOFTMAX_SIMD='sse'.*auto, avx2, avx512"):
        simd.choose("sse", frozenset())


def test_avx512_on_a_target_without_it_says_how_to_build_for_one():
    with pytest.raises(simd.SimdError, match="NUMBA_CPU_FEATURES"):
        simd.choose("avx512", frozenset({"avx2"}))


def test_avx2_on_a_target_that_kept_avx512_is_refused():
    # what remains when numba's target was fixed before fastsoftmax could turn AVX-512 off
    with pytest.raises(simd.SimdError, match="before fastsoftmax was imported"):
        simd.choose("avx2", frozenset({"avx2", "avx512f"}))


def test_without_avx512_turns_off_every_avx512_feature_and_nothing_else():
    features = "+64bit,+avx2,+avx512f,-avx512fp16,+avx512vl,+evex512,+avx10.1,+fma,-sse4a"
    out = simd.without_avx512(features)
    assert out == "+64bit,+avx2,-avx512f,-avx512fp16,-avx512vl,-evex512,-avx10.1,+fma,-sse4a"
    assert simd.parse_features(out) == {"64bit", "avx2", "fma"}


def test_this_process_uses_the_hosts_width():
    if os.environ.get("FASTSOFTMAX_SIMD") or os.environ.get("NUMBA_CPU_FEATURES"):
        pytest.skip("FASTSOFTMAX_SIMD or NUMBA_CPU_FEATURES is set: the width is not the host's")
    assert simd.WIDTH == ("avx512" if HOST_HAS_AVX512 else "avx2")
    assert simd.VECTOR_BYTES == simd.WIDTHS[simd.WIDTH]


_TILE_ASM = """
import re
from numba import types
from fastsoftmax import simd
from fastsoftmax.kernels import products
a, i, f = types.float32[::1], types.int64, types.float32
sig = (a, i, i, i, a, i, i, a, i, i, f, f)
products._tiles.compile(sig)  # compiled only: the target may be a CPU this one is not
asm = products._tiles.inspect_asm(sig)
print(simd.WIDTH, len(re.findall(r"vfmadd\\w+\\s[^\\n]*zmm", asm)),
      len(re.findall(r"vfmadd\\w+\\s[^\\n]*ymm", asm)), len(re.findall(r"zmm", asm)))
"""


def test_an_avx512_target_gets_64_byte_tiles(tmp_path):
    """Built for Zen 4 on any x86 host: the tiles' multiply-adds are on zmm registers."""
    run = _python(_TILE_ASM, tmp_path, NUMBA_CPU_NAME="znver4",
                  NUMBA_CPU_FEATURES=_host_features_with_avx512())
    assert run.returncode == 0, run.stderr
    width, zmm_fma, ymm_fma, _ = run.stdout.split()
    assert width == "avx512"
    assert int(zmm_fma) >= int(ymm_fma) > 0  # the bulk on zmm, the 32-byte tail on ymm


def test_the_same_target_without_avx512_gets_no_avx512_code(tmp_path):
    """What FASTSOFTMAX_SIMD=avx2 hands numba on an AVX-512 host: no zmm register anywhere,
    and a different feature string, so numba caches it apart."""
    features = simd.without_avx512(_host_features_with_avx512())
    run = _python(_TILE_ASM, tmp_path, NUMBA_CPU_NAME="znver4", NUMBA_CPU_FEATURES=features)
    assert run.returncode == 0, run.stderr
    width, zmm_fma, ymm_fma, zmm = run.stdout.split()
    assert (width, zmm_fma, zmm) == ("avx2", "0", "0") and int(ymm_fma) > 0


@pytest.mark.parametrize("env, message", [
    ({"FASTSOFTMAX_SIMD": "sse"}, "FASTSOFTMAX_SIMD='sse'"),
    ({"FASTSOFTMAX_SIMD": "avx2", "NUMBA_CPU_FEATURES": "+avx2,+fma,+avx512f"},
     "FASTSOFTMAX_SIMD=avx2, but numba's target already includes avx512f"),
])
def test_a_bad_setting_fails_the_import_with_its_name(tmp_path, env, message):
    run = _python("import fastsoftmax", tmp_path, **env)
    assert run.returncode != 0 and message in run.stderr


def test_avx512_on_this_host_without_it_fails_the_import(tmp_path):
    if HOST_HAS_AVX512:
        pytest.skip("this CPU has AVX-512: FASTSOFTMAX_SIMD=avx512 is valid here")
    run = _python("import fastsoftmax", tmp_path, FASTSOFTMAX_SIMD="avx512")
    assert run.returncode != 0 and "FASTSOFTMAX_SIMD=avx512, but" in run.stderr


def test_both_designs_train_the_same_bits(monkeypatch):
    """Built for one target, the two designs of the tiles train bit-identical models:
    every output element of a tile is the same chain of multiply-adds over k, whatever
    the tile's shape, and the rest of the kernels is the same code.  (Built for two
    targets, LLVM may split the vectorised reductions outside the tiles differently, so
    FASTSOFTMAX_SIMD=avx2 on an AVX-512 host is held to the reference's tolerances.)
    tests/test_kernels.py checks each design against the reference."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (600, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 600)
    for hidden in (20, 40, 56):  # 64-byte strips of 2 and 1 vectors, and the 32-byte tail
        for dtype in (np.float32, np.float64):
            for optimizer, lr in (("sgd", 0.05), ("adam", 1e-3)):
                trained = []
                for design in sorted(products.DESIGNS):
                    monkeypatch.setattr(products, "_tiles", products.DESIGNS[design])
                    trained.append(fs.train(X, y, hidden_size=hidden, epochs=2, batch_size=50,
                                            seed=1, optimizer=optimizer, learning_rate=lr,
                                            dtype=dtype).params)
                for a, b in zip(*trained):
                    np.testing.assert_array_equal(a, b)
