"""``python -m fastsoftmax.sweep``: the grid search on Fashion-MNIST, from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .checks import check_X
from .data import CLASS_NAMES, DataError, fingerprint, load_fashion_mnist, train_val_split
from .host.cpus import available_cpus
from .host.interrupts import (finish_then_interrupt, os_failure, report_stop,
                              terminate_as_interrupt)
from .host.machine import describe
from .kernels import simd
from .kernels.compile_aside import standing_by
from .sweep import grid as gridmod
from .sweep import run_sweep
from .sweep.results import (RESULTS_FORMAT, RUN_FACTS, FolderRefused, Record, ResultsFolder,
                            format_table)
from .trainer import evaluate, predict

EXIT_USAGE = 2
EXIT_DATA = 1


class UsageError(Exception):
    """Bad command line: one line on stderr, exit status 2, nothing written."""


class Failed(Exception):
    """The data, the cluster or an extra let the run down: one line on stderr, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        raise UsageError(message)


def _list(kind, name):
    def parse(text):
        items = [s.strip() for s in text.split(",")]
        if not text.strip() or any(not s for s in items):
            raise argparse.ArgumentTypeError(f"{name}: expected a comma-separated list, got {text!r}")
        try:
            return [kind(s) for s in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}: {text!r} is not a list of {'integers' if kind is int else 'numbers'}")

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m fastsoftmax.sweep",
                description="Grid search for the two-layer softmax network on Fashion-MNIST, "
                            "all configurations trained concurrently on every core.")
    p.add_argument("--grid", choices=sorted(gridmod.PRESETS), default="default",
                   help="preset grid (default: the original study's 72 configurations)")
    for flag, axis, kind in (("--batch-sizes", "batch_size", int),
                             ("--learning-rates", "learning_rate", float),
                             ("--epochs", "epochs", int), ("--alphas", "alpha", float),
                             ("--hidden-sizes", "hidden_size", int),
                             ("--optimizers", "optimizer", str)):
        p.add_argument(flag, dest=axis, type=_list(kind, flag),
                       help=f"comma-separated values overriding the preset's {axis}"
                       + (" (sgd, momentum, nesterov, adam; default settings: momentum 0.9, "
                          "Adam's betas 0.9, 0.999 and epsilon 1e-8)" if kind is str else ""))
    p.add_argument("--sample", type=int, metavar="N",
                   help="run N distinct configurations drawn at random from the grid")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the split, initialisation, minibatch order and --sample (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of the training set held out for validation (default 0.2)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use only N training images (before the split), for a quick look")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads training configurations at once (default: every CPU this "
                        "process may use, after CPU affinity and any cgroup CPU quota)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="train on a Dask cluster: tcp://HOST:PORT of a running scheduler, or "
                        "local:N to start N worker processes here (needs fastsoftmax[dask])")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the models' floating-point type (default float32, the fast one)")
    p.add_argument("--data", metavar="DIR",
                   help="directory holding the four data files (IDX, gzipped or not, or the "
                        ".npy files); default: FASTSOFTMAX_DATA, the cache, Debian's package")
    p.add_argument("--out", metavar="DIR",
                   help="write results.csv, results.jsonl, best.json, best_params.npz here; "
                        "rerunning with the same DIR resumes")
    p.add_argument("--report", action="store_true",
                   help="then draw the results into DIR/report.html, report.md and PNG pictures "
                        "(needs --out and the extra fastsoftmax[plot]: matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return p


def _configs(args) -> list[gridmod.Config]:
    axes = dict(gridmod.PRESETS[args.grid])
    for axis in gridmod.AXES:
        if getattr(args, axis) is not None:
            axes[axis] = getattr(args, axis)
    try:
        configs = gridmod.build_grid(**axes)
        if args.sample is not None:
            configs = gridmod.sample_grid(configs, args.sample, args.seed)
    except ValueError as exc:
        raise UsageError(str(exc))
    return configs


def _check_args(args):
    if args.scheduler is not None:
        from .sweep.cluster import parse_scheduler
        try:
            parse_scheduler(args.scheduler)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.workers is not None:
            raise UsageError("--workers is for a sweep on this machine; a cluster's workers "
                             "are set where they start (dask worker --nthreads N), or by "
                             "local:N")
    cpus = available_cpus()
    if args.workers is None:
        args.workers = cpus.count
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > cpus.count:
        raise UsageError(f"--workers: this process may use {cpus.count} CPU"
                         f"{'s' if cpus.count > 1 else ''} (limited by {cpus.source}), "
                         f"got {args.workers}")
    if args.report and args.out is None:
        raise UsageError("--report needs --out DIR: the report is written beside the results")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {args.val_fraction}")
    if args.seed < 0:  # numpy's seed sequences take none below 0
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.limit is not None and args.limit < 2:
        raise UsageError(f"--limit must be >= 2, got {args.limit}")
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        parent = out if out.exists() else out.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is not a directory")
        # os.access says yes to root everywhere; a real probe does not lie.
        # The probe file vanishes on close, so nothing is left behind.
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise UsageError(f"--out {out}: not writable ({exc.strerror})")


# --------------------------------------------------------------------------
# progress


class _Progress:
    """A live bar on a terminal (tqdm when installed), plain lines otherwise."""

    def __init__(self, n_configs: int, quiet: bool, stream=sys.stderr):
        self.quiet = quiet
        self.stream = stream
        self.n_configs = n_configs
        self.configs_done = 0
        self.start = time.monotonic()
        self.last_line = 0.0
        self.bar = None
        if not quiet and stream.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=1, unit="epoch", file=stream, dynamic_ncols=True,
                                desc="sweep")
            except ImportError:
                pass

    def config_done(self):
        self.configs_done += 1

    def __call__(self, done: int, total: int):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(f"configs {self.configs_done}/{self.n_configs}",
                                     refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_line >= 5 or done == total:
            self.last_line = now
            elapsed = now - self.start
            eta = f"{elapsed / done * (total - done):.0f}s" if done else "?"
            print(f"sweep: {self.configs_done}/{self.n_configs} configurations, "
                  f"{done}/{total} epochs, {elapsed:.0f}s elapsed, ETA {eta}",
                  file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------
# main


def main(argv=None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        # A local sweep's first run compiles its epoch kernel in a second process
        # (compile_aside); started now, that process starts up while this one reads the data.
        aside = standing_by("fastsoftmax.kernels.epoch") if args.scheduler is None else nullcontext()
        with terminate_as_interrupt(), aside:  # SIGTERM (kill, docker stop) stops as Ctrl-C does
            return _main(args)
    except UsageError as exc:
        print(f"fastsoftmax.sweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failed as exc:
        print(f"fastsoftmax.sweep: {exc}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM in any phase: no traceback, say what is kept
        return report_stop("fastsoftmax.sweep", _kept(args))
    except MemoryError:  # the grid's models, or the data, do not fit in this machine
        print(f"fastsoftmax.sweep: out of memory; {_kept(args)}", file=sys.stderr)
        return EXIT_DATA
    except OSError as exc:  # the machine's, not the data's: disk full, permissions, ...
        print(f"fastsoftmax.sweep: {os_failure(exc)}; {_kept(args)}", file=sys.stderr)
        return EXIT_DATA


def _kept(args) -> str:
    out = Path(args.out) if args is not None and args.out else None
    if out is None:
        return "nothing is kept without --out"
    try:
        n = sum(1 for line in (out / "results.jsonl").read_bytes().split(b"\n") if line.strip())
    except OSError:
        return f"nothing was written to {out}"
    return (f"the results of {n} configuration{'s' if n != 1 else ''} are kept in {out}; "
            "run the same command again to resume")


def _say(args, text):
    if not args.quiet:
        print(f"fastsoftmax.sweep: {text}", file=sys.stderr, flush=True)


def _main(args) -> int:
    started = time.monotonic()
    _check_args(args)
    if args.report:  # say so now, not after the training
        from .report.plots import MissingExtra, require_matplotlib
        try:
            require_matplotlib()
        except MissingExtra as exc:
            raise Failed(f"--report: {exc}") from None
    configs = _configs(args)
    ds, data = _load(args)
    folder, done = _open_folder(args, configs, ds)
    try:
        return _run(args, configs, ds, data, folder, done, started)
    finally:
        if folder is not None:
            folder.release()


def _run(args, configs, ds, data, folder, done, started) -> int:
    """Train what ``folder`` (or None) lacks of ``configs``, choose, test, write, report."""
    finished = {r.config for r in done}
    todo = [c for c in configs if c not in finished]
    result, trained = _train(args, todo, data, folder, len(configs), len(done))
    ranked = sorted(done + trained, key=Record.rank_key)
    best = ranked[0]
    if best.diverged:
        print(format_table(ranked))
        print("fastsoftmax.sweep: every configuration diverged; no model to test", file=sys.stderr)
        if args.report:  # the table and curves still say what happened
            _write_report(args, folder.path, ds)
        return 1
    # What a finished earlier run wrote to this folder, read once.
    previous = folder.previous_summary() if folder is not None else {}
    params = _best_params(args, result, folder, previous, best, data)
    summary = _summary(args, ds, data, params, best, len(ranked), len(done), started)
    if not todo and folder is not None:
        # A rerun that trained nothing keeps the run that did: its time and machine.
        summary.update({k: previous[k] for k in RUN_FACTS if k in previous})
    if folder is not None:
        with finish_then_interrupt():  # Ctrl-C waits for the whole set
            folder.write_best(params, ranked, summary)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_result(ranked, best, summary)
    if args.report:
        _write_report(args, folder.path, ds)
    return 0


def _load(args):
    """The data set, and its training images split into (X, y, X_val, y_val) for the
    sweep; uint8 images stay uint8 (the kernels scale pixels as they read them)."""
    _say(args, "loading the data")
    try:
        ds = load_fashion_mnist(args.data)
    except (FileNotFoundError, DataError) as exc:
        raise Failed(str(exc)) from None
    images, labels = _training_set(args, ds)
    try:
        tr, va = train_val_split(len(labels), args.val_fraction, args.seed)
    except ValueError as exc:
        raise UsageError(f"--val-fraction: {exc}") from None
    dtype = np.dtype(args.dtype)
    return ds, (check_X(images[tr], dtype, keep_pixels=True), labels[tr],
                check_X(images[va], dtype, keep_pixels=True), labels[va])


def _training_set(args, ds):
    """The training images and labels the sweep uses (the first --limit of them)."""
    if args.limit is None:
        return ds.train_images, ds.train_labels
    return ds.train_images[:args.limit], ds.train_labels[:args.limit]


def _open_folder(args, configs, ds) -> tuple[ResultsFolder | None, list[Record]]:
    """The --out folder, created or resumed (with the records already in it)."""
    if args.out is None:
        return None, []
    images, labels = _training_set(args, ds)
    meta = {"format": RESULTS_FORMAT, "configs": [c.as_dict() for c in configs],
            "seed": args.seed, "val_fraction": args.val_fraction, "dtype": args.dtype,
            "limit": args.limit, "data": fingerprint(images, labels)}
    folder = ResultsFolder(args.out)
    try:
        done = folder.open(meta, warn=lambda text: print(f"fastsoftmax.sweep: {text}",
                                                         file=sys.stderr))
    except FolderRefused as exc:
        raise UsageError(str(exc)) from None
    if done:
        _say(args, f"resuming {folder.path}: {len(done)} of {len(configs)} configurations "
                   f"already done")
    return folder, done


def _train(args, todo, data, folder, n_configs: int, n_done: int):
    """Train ``todo``, each record on disk as it finishes: (SweepOutput or None, records)."""
    progress = _Progress(n_configs, args.quiet)
    progress.configs_done = n_done
    trained: list[Record] = []

    def on_record(rec: Record):
        progress.config_done()
        if folder is not None:
            folder.append(rec)
        trained.append(rec)

    def on_phase(name, workers):
        if name == "compile":
            _say(args, "compiling the kernels (up to a minute on a first run; then numba's cache)")
        elif name == "connect":
            _say(args, f"connecting to the Dask cluster {args.scheduler}")
        else:
            _say(args, f"training {len(todo)} configurations on {workers} worker"
                       f"{'s' if workers > 1 else ''}")

    from .sweep.cluster import ClusterError  # imports no Dask by itself
    result = None
    try:
        if todo:
            result = run_sweep(todo, *data, dtype=np.dtype(args.dtype), workers=args.workers,
                               scheduler=args.scheduler, seed=args.seed, on_record=on_record,
                               on_progress=progress, on_phase=on_phase)
    except ClusterError as exc:
        raise Failed(str(exc)) from None
    finally:
        progress.close()
        if folder is not None:
            folder.close()
    if result is not None and result.interrupted:
        raise KeyboardInterrupt
    return result, trained


def _best_params(args, result, folder, previous, best, data):
    """The chosen model: trained in this run, saved by a finished earlier one, or (an
    earlier, interrupted run trained it) trained again, bit-identically."""
    params = result.params.get(best.config) if result else None
    X = data[0]
    if params is None and previous:
        params = folder.saved_best(previous, best,
                                   (X.shape[1], best.config.hidden_size, len(CLASS_NAMES)),
                                   np.dtype(args.dtype))
    if params is None:
        _say(args, "training the best configuration again (an earlier run did not keep it)")
        again = run_sweep([best.config], *data, dtype=np.dtype(args.dtype), workers=1,
                          seed=args.seed)
        if again.interrupted:
            raise KeyboardInterrupt
        params = again.params[best.config]
    return params


def _summary(args, ds, data, params, best, n_configs, n_resumed, started) -> dict:
    """The chosen model on the test set, and the run: what best.json holds."""
    Xt = check_X(ds.test_images, np.dtype(args.dtype), keep_pixels=True)
    test_loss, test_acc = evaluate(params, Xt, ds.test_labels)
    pred = predict(params, Xt)
    per_class = {CLASS_NAMES[k]: float(np.mean(pred[ds.test_labels == k] == k))
                 for k in range(len(CLASS_NAMES))}
    summary = {"best": best.as_dict(), "test_loss": test_loss, "test_accuracy": test_acc,
               "test_per_class_accuracy": per_class, "n_configs": n_configs,
               "n_train": int(len(data[1])), "n_val": int(len(data[3])), "seed": args.seed,
               # this run's wall time; with resumed_configs > 0 earlier runs did those
               "wall_seconds": round(time.monotonic() - started, 2),
               "resumed_configs": n_resumed,
               "machine": describe(None if args.scheduler else args.workers, simd.WIDTH)}
    if args.scheduler is not None:
        summary["scheduler"] = args.scheduler
    return summary


def _print_result(ranked, best, summary):
    print(format_table(ranked))
    c = best.config
    print(f"\nbest: batch_size={c.batch_size} learning_rate={c.learning_rate:g} "
          f"epochs={c.epochs} alpha={c.alpha:g} hidden_size={c.hidden_size} "
          f"optimizer={c.optimizer} "
          f"(val accuracy {best.val_accuracy:.4f})")
    print(f"test: loss {summary['test_loss']:.4f}, accuracy {summary['test_accuracy']:.4f}")
    print("per class: " + ", ".join(f"{k} {v:.3f}"
                                    for k, v in summary["test_per_class_accuracy"].items()))


def _write_report(args, out: Path, ds):
    from .report.pages import build_report
    _say(args, "drawing the report")
    paths = build_report(out, dataset=ds).write(out)
    _say(args, f"wrote {out / 'report.html'} and {len(paths) - 1} more files")
