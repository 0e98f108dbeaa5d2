"""Turn a pytest-benchmark JSON file into a markdown table of ratios and a PNG chart.

    python -m pytest bench/ --benchmark-json=bench/results.json
    python bench/report.py bench/results.json --markdown bench/results.md --png bench/results.png

Every ratio compares numbers measured in the same run: fastsoftmax's samples/s
over each peer's, per (hidden size, batch size) cell.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

PEER_ORDER = ["fastsoftmax", "fastsoftmax-avx2", "fastsoftmax-uint8", "jax-scan", "numpy-reference", "torch-manual",
              "torch-idiomatic", "sklearn-mlp", "fastsoftmax-pack4", "jax-vmap"]
# Four configurations per epoch, counted in aggregate samples/s: compared with each other.
PACKED = ("fastsoftmax-pack4", "jax-vmap")
# pytest-benchmark names the 4-configuration runs by their "name" parameter
TEST_PEER = {"test_epoch_avx2_path": "fastsoftmax-avx2", "jax_vmap": "jax-vmap", "fastsoftmax_pack": "fastsoftmax-pack4",
             "test_epoch_jax_vmap": "jax-vmap", "test_epoch_fastsoftmax_pack": "fastsoftmax-pack4"}


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        benches = data["benchmarks"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"report.py: {path}: not a pytest-benchmark JSON file ({exc})")
    return data, benches


def epoch_table(benches) -> tuple[dict, list]:
    """{(H, B): {peer: samples_per_s}} and the peers present, in display order."""
    cells = defaultdict(dict)
    for b in benches:
        if not b["name"].startswith("test_epoch"):
            continue
        p = b["params"]
        peer = p.get("peer") or TEST_PEER[p.get("name") or b["name"].split("[")[0]]
        cells[(p["H"], p["B"])][peer] = b["extra_info"]["samples_per_s"]
    present = [p for p in PEER_ORDER if any(p in c for c in cells.values())]
    return dict(sorted(cells.items())), present


def paired(benches) -> dict:
    """{(H, B): {peer: extra_info}} of test_paired_epochs (fastsoftmax and JAX alternating)."""
    cells = defaultdict(dict)
    for b in benches:
        if b["name"].startswith("test_paired_epochs"):
            info = b["extra_info"]
            cells[(info["H"], info["B"])][info["peer"]] = info
    return dict(sorted(cells.items()))


def gemm(benches) -> dict:
    return {b["params"]["threads"]: b["extra_info"]["gflops"]
            for b in benches if b["name"].startswith("test_gemm")}


def tiles(benches) -> list:
    """The extra_info (GFLOP/s, vector bytes, shape, CPU) of fastsoftmax's register tile on
    operands in L1, one per width measured."""
    return [b["extra_info"] for b in benches if b["name"].startswith("test_core_peak")]


def tile_peak(benches):
    """The fastest of :func:`tiles`, or None."""
    return max(tiles(benches), key=lambda t: t["gflops"], default=None)


def core_peak(benches):
    """(GFLOP/s, source): one core's float32 peak, the better of NumPy's 1-thread SGEMM
    and fastsoftmax's tile in L1, measured in the same run; (None, None) if neither ran."""
    candidates = []
    g = gemm(benches)
    if g.get(1):
        candidates.append((g[1], "NumPy's 1-thread SGEMM 4096"))
    tile = tile_peak(benches)
    if tile:
        candidates.append((tile["gflops"], f"fastsoftmax's {tile.get('vector_bytes', 32)}-byte "
                                           f"register tile in L1"))
    return max(candidates) if candidates else (None, None)


def two_core_peak(benches):
    """(GFLOP/s, source): two cores' float32 peak, the better of NumPy's 2-thread SGEMM
    and twice the core peak, measured in the same run; (None, None) if neither ran."""
    candidates = []
    g = gemm(benches)
    if g.get(2):
        candidates.append((g[2], "NumPy's 2-thread SGEMM 4096"))
    peak, source = core_peak(benches)
    if peak:
        candidates.append((2 * peak, f"twice the core peak, {source}"))
    return max(candidates) if candidates else (None, None)


def sweep_rate(benches):
    """(model GFLOP/s, GFLOP) of fastsoftmax's 2-thread default sweep, or None when the run
    did not record its model FLOPs."""
    for b in benches:
        if b["name"].startswith("test_sweep_fastsoftmax") and b["params"]["workers"] == 2:
            gflop = b["extra_info"].get("model_gflop")
            return (gflop / b["stats"]["min"], gflop) if gflop else None
    return None


def blas_kernel(benches) -> str:
    for b in benches:
        if b["name"].startswith("test_gemm") and b["extra_info"].get("blas"):
            lib = b["extra_info"]["blas"][0]
            return f"{lib.get('internal_api')} {lib.get('version')}, kernel {lib.get('architecture')}"
    return "unknown"


def sweeps(benches) -> dict:
    out = {}
    for b in benches:
        if b["name"].startswith("test_sweep_fastsoftmax"):
            w = b["params"]["workers"]
            name = (f"fastsoftmax on a Dask cluster ({w}, start-up included)"
                    if isinstance(w, str) else f"fastsoftmax, {w} thread(s)")
            out[name] = b["stats"]["min"]
        elif b["name"].startswith("test_sweep_numpy"):
            out["NumPy reference loop, 1 thread"] = b["stats"]["min"]
    return out


def grids(benches) -> dict:
    """Whole-process wall times of the default grid: fastsoftmax warm / first run, JAX."""
    out = {}
    for b in benches:
        info = b["extra_info"]
        if b["name"].startswith("test_grid_fastsoftmax"):
            out[f"fastsoftmax sweep, {info['start']}"] = info["wall_seconds"]
        elif b["name"].startswith("test_grid_jax"):
            out[f"JAX grid, {info['layout']}"] = info["wall_seconds"]
    return out


def grid_pairs(benches) -> dict:
    """extra_info of test_grid_first_run_paired (first runs and JAX alternating), or {}."""
    return next((b["extra_info"] for b in benches
                 if b["name"].startswith("test_grid_first_run_paired")), {})


def estimator_fits(benches) -> dict:
    names = {"test_fit_fastsoftmax": "SoftmaxMLPClassifier", "test_fit_mlpclassifier": "MLPClassifier"}
    return {names[b["name"]]: b["stats"]["min"] for b in benches if b["name"] in names}


def markdown(data, benches) -> str:
    cells, peers = epoch_table(benches)
    flops = {}
    for b in benches:
        if b["name"].startswith("test_epoch") and b["params"].get("peer", "") == "fastsoftmax":
            flops[(b["params"]["H"], b["params"]["B"])] = b["extra_info"]["model_gflops"]
    g = gemm(benches)
    peak, peak_source = core_peak(benches)
    machine = data.get("machine_info", {})
    tile = tile_peak(benches) or {}
    simd = ", ".join(tile.get("simd", [])) or "not recorded"
    lines = [f"Run {data.get('datetime', '?')[:19]}, {machine.get('cpu', {}).get('brand_raw', '?')}, "
             f"{machine.get('cpu', {}).get('count', '?')} cores (SIMD: {simd}); one thread per "
             f"implementation for the epoch table; fastsoftmax's kernels built for "
             f"{tile.get('kernels_width', 'avx2')} (FASTSOFTMAX_SIMD).", ""]
    if cells:
        lines += ["One epoch on the 60,000 training images, float32: fastsoftmax's samples/s, "
                  "and how many times faster it is than each peer; then the grid-search idiom, "
                  "4 configurations per epoch in aggregate samples/s: fastsoftmax training them "
                  "as a pack against JAX's vmap.", ""]
        singles = [p for p in peers if p != "fastsoftmax" and p not in PACKED]
        head = ["H", "B", "fastsoftmax samples/s"] + [f"x {p}" for p in singles]
        if g.get(1):
            head.append("% of 1-thread GEMM")
        if peak:
            head.append("% of core peak")
        head += ["fastsoftmax-pack4 samples/s", "x jax-vmap"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (H, B), row in cells.items():
            ours = row.get("fastsoftmax")
            cols = [str(H), str(B), f"{ours / 1e6:.2f}M" if ours else "-"]
            for p in singles:
                cols.append(f"{ours / row[p]:.2f}" if ours and p in row else "skipped")
            if g.get(1):
                cols.append(f"{100 * flops.get((H, B), 0) / g[1]:.0f}%")
            if peak:
                cols.append(f"{100 * flops.get((H, B), 0) / peak:.0f}%")
            pack, vmap = row.get("fastsoftmax-pack4"), row.get("jax-vmap")
            cols.append(f"{pack / 1e6:.2f}M" if pack else "-")
            cols.append(f"{pack / vmap:.2f}" if pack and vmap else "skipped")
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
    pairs = paired(benches)
    if pairs:
        n = max(len(i["ratios"]) for c in pairs.values() for i in c.values())
        lines += [f"fastsoftmax against JAX with their epochs alternating ({n} pairs per cell, "
                  "the first of a pair taken in turn; one pinned core): the median of the pairs' "
                  "ratios (JAX's epoch time over fastsoftmax's; above 1: fastsoftmax faster), "
                  "the lowest and highest pair, and the best epoch over the best epoch.", "",
                  "| H | B | x jax-scan, median | lowest - highest | best / best "
                  "| pack4 x jax-vmap, median | lowest - highest | best / best |",
                  "|---|---|---|---|---|---|---|---|"]
        for (H, B), row in pairs.items():
            cols = [str(H), str(B)]
            for peer in ("jax-scan", "jax-vmap"):
                info = row.get(peer)
                cols += ([f"{info['median_ratio']:.2f}",
                          f"{min(info['ratios']):.2f} - {max(info['ratios']):.2f}",
                          f"{info['best_ratio']:.2f}"] if info else ["skipped"] * 3)
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
    if g:
        lines += ["float32 GEMM 4096 x 4096 (NumPy's BLAS, " + blas_kernel(benches) +
                  ", OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset): " +
                  ", ".join(f"{t} thread(s) {v:.0f} GFLOP/s" for t, v in sorted(g.items())), ""]
    measured = tiles(benches)
    if measured:
        # runs before the shape was recorded measured the 6 x 16 tile alone
        lines += ["fastsoftmax's register tiles on operands in L1: " + ", ".join(
            f"{t.get('rows', 6)} x {t.get('cols', 16)} ({t.get('vector_bytes', 32)}-byte "
            f"vectors) {t['gflops']:.0f} GFLOP/s" for t in measured), ""]
    if peak:
        lines += [f"Core peak used for '% of core peak': {peak:.0f} GFLOP/s ({peak_source}).", ""]
    s = sweeps(benches)
    if s:
        lines += ["Default sweep, 72 configurations, 48,000 / 12,000 images, wall time:", ""]
        base = s.get("fastsoftmax, 2 thread(s)")
        for name, t in s.items():
            ratio = f" ({t / base:.1f}x fastsoftmax on 2 threads)" if base and t != base else ""
            lines.append(f"- {name}: {t:.1f} s{ratio}")
        lines.append("")
        rate, (peak2, source2) = sweep_rate(benches), two_core_peak(benches)
        if rate and peak2:
            lines += [f"fastsoftmax's 2-thread sweep: {rate[1]:.0f} GFLOP of model arithmetic "
                      f"(training, and validation at the grid's epoch counts) at "
                      f"{rate[0]:.0f} GFLOP/s, {100 * rate[0] / peak2:.0f}% of the 2-core peak "
                      f"{peak2:.0f} GFLOP/s ({source2}).", ""]
    grid = grids(benches)
    if grid:
        lines += ["The default grid (72 configurations) as whole processes on 2 cores, start-up, "
                  "data and compilation included (JAX compiles on every run):", "",
                  "| run | wall | x fastsoftmax warm | x fastsoftmax first run |", "|---|---|---|---|"]
        warm, cold = grid.get("fastsoftmax sweep, warm"), grid.get("fastsoftmax sweep, first-run")
        for name, t in grid.items():
            lines.append(f"| {name} | {t:.1f} s | {t / warm:.2f} |" if warm else f"| {name} | {t:.1f} s | - |")
            lines[-1] += f" {t / cold:.2f} |" if cold else " - |"
        lines.append("")
    first = grid_pairs(benches)
    if first:
        lines += [f"fastsoftmax's first run and the two pinned JAX processes alternating "
                  f"({len(first['ratios'])} rounds, each side first in turn): "
                  f"fastsoftmax {', '.join(f'{t:.1f}' for t in first['ours_s'])} s, "
                  f"JAX {', '.join(f'{t:.1f}' for t in first['jax_s'])} s; JAX's wall over "
                  f"fastsoftmax's, median {first['median_ratio']:.2f} "
                  f"(pairs {min(first['ratios']):.2f} - {max(first['ratios']):.2f})."]
        if "jax_every_s" in first:  # runs since the JAX grid also ran as the sweep validates
            lines[-1] += (f" The same processes validating after every epoch, as the sweep "
                          f"does: {', '.join(f'{t:.1f}' for t in first['jax_every_s'])} s; "
                          f"median {first['median_ratio_every']:.2f} (pairs "
                          f"{min(first['ratios_every']):.2f} - "
                          f"{max(first['ratios_every']):.2f}).")
        lines.append("")
    fits = estimator_fits(benches)
    if fits:
        ours, theirs = fits.get("SoftmaxMLPClassifier"), fits.get("MLPClassifier")
        ratio = f" ({theirs / ours:.1f}x)" if ours and theirs else ""
        lines += ["Estimator fit, 60,000 images, 10 epochs, one thread: " +
                  ", ".join(f"{k} {v:.1f} s" for k, v in fits.items()) + ratio, ""]
    return "\n".join(lines)


def chart(benches, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells, peers = epoch_table(benches)
    if not cells:
        raise SystemExit("report.py: no epoch benchmarks in the file; nothing to plot")
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(peers)
    for k, peer in enumerate(peers):
        xs = [i + k * width for i in range(len(cells))]
        ys = [row.get(peer, 0) / 1e6 for row in cells.values()]
        ax.bar(xs, ys, width, label=peer)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))])
    ax.set_xticklabels([f"H={H}\nB={B}" for H, B in cells])
    ax.set_ylabel("training samples / s (millions), one thread")
    ax.set_title("One epoch of Fashion-MNIST, float32 (higher is better)")
    # Beside the axes, not inside: inside, it hid the tallest bars (the packs at B=128).
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("--markdown", type=Path, help="write the table here (default: stdout)")
    ap.add_argument("--png", type=Path, help="write the bar chart here")
    args = ap.parse_args(argv)
    data, benches = load(args.json)
    text = markdown(data, benches)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    if args.png:
        chart(benches, args.png)


if __name__ == "__main__":
    main()
