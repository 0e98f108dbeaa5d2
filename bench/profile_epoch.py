"""Where an epoch's time goes, by kernel: fastsoftmax's epoch under Linux ``perf``.

perf sees numba's machine code as anonymous JIT memory.  This script trains, then writes
``/tmp/perf-<pid>.map`` naming every function of the compiled epoch kernel, which
``perf report`` reads, and ``<perf data>.window``, the timed epochs' start and end on
CLOCK_MONOTONIC; ``--summary`` folds the samples of that window by kernel name.

    NUMBA_CACHE_DIR=$(mktemp -d) perf record -k CLOCK_MONOTONIC -F 1000 -o perf.data \\
        python bench/profile_epoch.py 20 128 --pack 4
    python bench/profile_epoch.py --summary perf.data

The empty NUMBA_CACHE_DIR makes numba compile in this process (code loaded from the cache
carries no module to name functions from).  ``-k CLOCK_MONOTONIC`` gives perf's samples the
clock the window is written in: the compiler calls memmove and memset too, and counting its
samples once made them look like 11% of an epoch.  The summary's shares are of the timed
epochs' samples of the kernels and the C library calls they make (exp, memset, memmove).
One pinned core, float32 (or ``--uint8`` pixels), real data, ``--epochs`` timed epochs after
one that compiles.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter

KERNEL = re.compile(r"fastsoftmax\d*kernels\d+(?:[a-z]+\d+)?(\w+?)B\d+v\d+")
LIBC = ("__expf_fma", "__memset_avx2_unaligned_erms", "__memmove_avx_unaligned_erms")


def train(H: int, B: int, pack: int, epochs: int, pixels: bool, window: str) -> None:
    from threadpoolctl import threadpool_limits

    from fastsoftmax.kernels import epoch, products

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import (Fastsoftmax, FastsoftmaxPack, FastsoftmaxPixels, one_pinned_core,
                       real_train_set)

    one_pinned_core()
    X, y = real_train_set()
    with threadpool_limits(1):
        if pack > 1:
            cell = FastsoftmaxPack(X, y, H, B, n_configs=pack)
        else:
            cell = (FastsoftmaxPixels if pixels else Fastsoftmax)(X, y, H, B)
        cell.epoch()  # compiles
        t, start = time.perf_counter(), time.clock_gettime(time.CLOCK_MONOTONIC)
        for _ in range(epochs):
            cell.epoch()
        end = time.clock_gettime(time.CLOCK_MONOTONIC)
        seconds = (time.perf_counter() - t) / epochs
    with open(window, "w") as out:
        out.write(f"{start:.6f},{end:.6f}\n")
    print(f"H={H} B={B} pack={pack} {'uint8' if pixels else 'float32'} input: "
          f"{seconds:.3f} s per epoch")
    symbols = []
    # Both epoch kernels: plain-SGD models (these) train in _train_epoch_sgd.  _tiles is a
    # library of its own (the kernels call it through a pointer), so it is named apart.
    compiled = [*epoch._train_epoch_many.overloads.values(),
                *epoch._train_epoch_sgd.overloads.values()]
    if not compiled:
        raise SystemExit("profile_epoch.py: no epoch kernel was compiled in this process")
    compiled += products._tiles.overloads.values()
    for cres in compiled:
        module = getattr(cres.library, "_final_module", None)
        if module is None:
            raise SystemExit("profile_epoch.py: the kernel came from numba's cache; "
                             "run with an empty NUMBA_CACHE_DIR")
        for f in module.functions:
            if not f.is_declaration:
                address = cres.library.get_pointer_to_function(f.name)
                if address:
                    symbols.append((address, f.name))
    symbols.sort()
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for i, (address, name) in enumerate(symbols):
            size = symbols[i + 1][0] - address if i + 1 < len(symbols) else 1 << 16
            out.write(f"{address:x} {size:x} {name}\n")


def summary(perf_data: str, window_file: str | None) -> None:
    window_file = window_file or perf_data + ".window"
    try:
        with open(window_file) as f:
            window = f.read().strip()
    except FileNotFoundError:
        raise SystemExit(f"profile_epoch.py: no {window_file}; train with --window "
                         f"{window_file} (or record with -o {perf_data} and no --window)") from None
    report = subprocess.run(["perf", "report", "-i", perf_data, "--sort", "sym", "--stdio", "-n",
                             "--time", window],
                            capture_output=True, text=True, check=True).stdout
    samples = Counter()
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 4 or line.startswith("#"):
            continue
        name = parts[3]
        m = KERNEL.search(name.replace("_ZN", ""))
        if m:
            # a factory's function: _epoch_kernel12_3clocals_3e5epoch, as numba mangles
            # _epoch_kernel.<locals>.epoch
            outer, _, inner = m.group(1).partition("_3clocals_3e")
            label = f"{outer.rstrip('0123456789')}.<locals>.{inner.lstrip('0123456789')}" \
                if inner else outer
            samples[label] += int(parts[1])
        elif name in LIBC:
            samples[name] += int(parts[1])
    total = sum(samples.values())
    if not total:
        raise SystemExit(f"profile_epoch.py: no fastsoftmax samples in {perf_data}")
    for name, n in samples.most_common():
        print(f"{name:32s} {100 * n / total:5.1f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("H", type=int, nargs="?")
    ap.add_argument("B", type=int, nargs="?")
    ap.add_argument("--pack", type=int, default=1, help="models trained together (default 1)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--uint8", action="store_true",
                    help="feed the uint8 pixels (one model; the sweep's input) instead of floats")
    ap.add_argument("--summary", metavar="PERF_DATA", help="fold a perf.data by kernel")
    ap.add_argument("--window",
                    help="the timed window's file, written by training and read by --summary "
                         "(default: perf.data.window when training, PERF_DATA.window for "
                         "--summary; give the same file to both when perf record's -o is not "
                         "perf.data)")
    args = ap.parse_args(argv)
    if args.summary:
        summary(args.summary, args.window)
    elif args.H is None or args.B is None:
        ap.error("give H and B, or --summary PERF_DATA")
    else:
        if args.uint8 and args.pack > 1:
            ap.error("--uint8 profiles one model; leave out --pack")
        train(args.H, args.B, args.pack, args.epochs, args.uint8,
              args.window or "perf.data.window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
