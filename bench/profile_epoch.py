"""Where an epoch's time goes, by kernel: fastsoftmax's epoch under Linux ``perf``.

perf sees numba's machine code as anonymous JIT memory.  This script trains, then writes
``/tmp/perf-<pid>.map`` naming every function of the compiled epoch kernel, which
``perf report`` reads; ``--summary`` folds the report by kernel name.

    NUMBA_CACHE_DIR=$(mktemp -d) perf record -F 1000 -o perf.data \\
        python bench/profile_epoch.py 20 128 --pack 4
    python bench/profile_epoch.py --summary perf.data

The empty NUMBA_CACHE_DIR makes numba compile in this process (code loaded from the cache
carries no module to name functions from).  Samples from compiling are left out of the
summary's shares, which count the kernels' own samples and the C library calls they make
(exp, memset, memmove).  One pinned core, float32, real data, ``--epochs`` timed epochs
after one that compiles.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import Counter

KERNEL = re.compile(r"fastsoftmax\d*kernels\d+(\w+?)B\d+v\d+")
LIBC = ("__expf_fma", "__memset_avx2_unaligned_erms", "__memmove_avx_unaligned_erms")


def train(H: int, B: int, pack: int, epochs: int) -> None:
    from threadpoolctl import threadpool_limits

    from fastsoftmax import kernels

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import Fastsoftmax, FastsoftmaxPack, one_pinned_core, real_train_set

    one_pinned_core()
    X, y = real_train_set()
    with threadpool_limits(1):
        cell = FastsoftmaxPack(X, y, H, B, n_configs=pack) if pack > 1 else Fastsoftmax(X, y, H, B)
        cell.epoch()  # compiles
        t = time.perf_counter()
        for _ in range(epochs):
            cell.epoch()
        print(f"H={H} B={B} pack={pack}: {(time.perf_counter() - t) / epochs:.3f} s per epoch")
    symbols = []
    for cres in kernels._train_epoch_many.overloads.values():
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


def summary(perf_data: str) -> None:
    report = subprocess.run(["perf", "report", "-i", perf_data, "--sort", "sym", "--stdio", "-n"],
                            capture_output=True, text=True, check=True).stdout
    samples = Counter()
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 4 or line.startswith("#"):
            continue
        name = parts[3]
        m = KERNEL.search(name.replace("_ZN", ""))
        if m:
            samples[m.group(1)] += int(parts[1])
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
    ap.add_argument("--summary", metavar="PERF_DATA", help="fold a perf.data by kernel")
    args = ap.parse_args(argv)
    if args.summary:
        summary(args.summary)
    elif args.H is None or args.B is None:
        ap.error("give H and B, or --summary PERF_DATA")
    else:
        train(args.H, args.B, args.pack, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
