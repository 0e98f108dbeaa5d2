"""``python -m fastsoftmax.report DIR``: a sweep's results folder as pictures and a page.

Writes, beside the results, ``report.html`` (self-contained: the pictures
inline, no network, no JavaScript), ``report.md`` and the pictures as PNG
files (``learning_curves.png``, ``accuracy_heatmaps.png``, ``confusion.png``,
``misclassified.png``, ``all_curves.png``).  Everything is drawn in memory
first and written only once all of it exists, each file whole or not at all:
an error leaves the folder as it was.

Works on a finished sweep, a partial (interrupted) one, a ``--sample`` of a
grid and a grid with one value per axis.  The chosen model's test-set
pictures (confusion matrix, misclassified images) need the finished sweep's
``best_params.npz`` and the data.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import OFFICIAL, DataError, Dataset, fingerprint, load_fashion_mnist
from ..host.atomic import atomic_open
from ..host.interrupts import (finish_then_interrupt, os_failure, report_stop,
                               terminate_as_interrupt)
from ..host.machine import describe
from ..sweep.grid import AXES, Config
from ..sweep.results import NotASweep, SweepResults, read_results

EXIT_MISSING = 1  # matplotlib or the data missing
EXIT_USAGE = 2  # not a sweep's folder, bad arguments

PICTURES = {  # file name: (heading, what it shows)
    "learning_curves.png": ("Learning curves of the best configurations",
                            "Training and validation cross-entropy (the same quantity, without "
                            "the L2 term) and validation accuracy per epoch, for the best "
                            "groups (configurations that differ only in their epoch count "
                            "share one training run; each is drawn to its longest). The "
                            "training value averages the epoch's minibatches while the "
                            "weights were still moving, so early on it lies above the "
                            "validation value, measured after the epoch."),
    "accuracy_heatmaps.png": ("Validation accuracy across the grid",
                              "Learning rate against alpha, one panel per hidden size and "
                              "batch size."),
    "confusion.png": ("The chosen model on the test set",
                      "Confusion matrix (counts, shaded by the fraction of the true class) "
                      "and each class's accuracy."),
    "misclassified.png": ("Misclassified test images",
                          "The test images the chosen model got wrong with most confidence, "
                          "with their true and predicted classes."),
    "all_curves.png": ("Every group's learning curves",
                       "Training and validation cross-entropy per epoch, best group first."),
}


@dataclass
class Report:
    """A report in memory: file name -> bytes, written by :meth:`write`."""

    files: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)  # what is missing, and why

    def write(self, folder) -> list[Path]:
        """Write every file into ``folder``, each whole; Ctrl-C waits for the set."""
        folder = Path(folder)
        paths = []
        with finish_then_interrupt():
            # report.html last: its presence means the rest are there.
            for name in sorted(self.files, key=lambda n: n == "report.html"):
                with atomic_open(folder / name, "wb") as f:
                    f.write(self.files[name])
                paths.append(folder / name)
        return paths


def _png(fig) -> bytes:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _check_data(results: SweepResults, ds: Dataset) -> None:
    """The data must be the sweep's: same training images (after --limit) and labels."""
    limit = results.meta.get("limit")
    images, labels = ds.train_images, ds.train_labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if fingerprint(images, labels) != results.meta.get("data"):
        raise DataError(f"the data in {ds.source} is not the data the sweep in "
                        f"{results.path} was run on (its fingerprint differs); "
                        f"give the sweep's --data")


def build_report(folder, *, dataset: Dataset | None = None, data_dir=None,
                 top: int = 5) -> Report:
    """Draw the pictures and write the pages of a results folder, in memory.

    folder : a sweep's ``--out`` folder (NotASweep if it is not one)
    dataset : the data, if already loaded; else it is loaded from ``data_dir``
        as the sweep loads it (only needed for the chosen model's test pictures)
    top : how many of the best groups the learning curves show
    """
    from . import plots

    plots.require_matplotlib()
    results = read_results(folder)
    if not results.records:
        raise NotASweep(f"{results.path}: no configuration has finished yet; nothing to report")
    report = Report()
    figures = {"learning_curves.png": plots.learning_curves(results, top=top),
               "accuracy_heatmaps.png": plots.accuracy_heatmaps(results)}
    test = None
    params = results.best_params()
    if params is not None:
        ds = dataset if dataset is not None else load_fashion_mnist(data_dir)
        _check_data(results, ds)
        from ..trainer import predict_proba
        proba = predict_proba(params, ds.test_images)
        pred = proba.argmax(axis=1)
        accuracy = float(np.mean(pred == ds.test_labels))
        if not np.isclose(accuracy, results.summary["test_accuracy"], rtol=0, atol=1e-9):
            raise DataError(f"{results.path / 'best_params.npz'} scores {accuracy:.4f} on the "
                            f"test set of {ds.source}, but best.json says "
                            f"{results.summary['test_accuracy']:.4f}; the folder or the data "
                            f"has changed since the sweep")
        figures["confusion.png"] = plots.confusion_matrix(ds.test_labels, pred, ds.class_names)
        figures["misclassified.png"] = plots.misclassified(ds.test_images, ds.test_labels, proba,
                                                           ds.class_names)
        test = ds
    elif results.all_diverged:
        report.notes.append("Every configuration diverged (see the table), so there is no model "
                            "to test and no test-set pictures; try smaller learning rates.")
    elif results.summary is not None:
        report.notes.append(f"{results.path / 'best_params.npz'} is missing, so the test-set "
                            f"pictures are too. Run the same sweep command again: it trains the "
                            f"chosen model again, bit-identically, and saves it.")
    else:
        report.notes.append(
            f"The sweep has not finished ({len(results.records)} of "
            f"{len(results.meta['configs'])} configurations recorded), so no model has been "
            f"chosen or tested yet: the test-set pictures are missing. Run the same sweep "
            f"command again to finish it, then the report again.")
    figures["all_curves.png"] = plots.curves_grid(results)
    for name, fig in figures.items():
        report.files[name] = _png(fig)
    report.files["report.md"] = _markdown(results, report, test).encode()
    report.files["report.html"] = _html(results, report, test).encode()
    return report


# --------------------------------------------------------------------------
# the pages: one list of sections, rendered twice


def _sections(results: SweepResults, report: Report, test: Dataset | None) -> list:
    """The report as (kind, payload) items: ("h", text), ("p", text),
    ("table", (header, rows)), ("img", file name)."""
    return (_overview(results, report) + _chosen(results.summary)
            + _pictures(report) + _every_configuration(results) + _settings(results)
            + _data(results.meta, test) + _machine(results))


def _overview(results: SweepResults, report: Report) -> list:
    meta, summary = results.meta, results.summary
    n_all, n_done = len(meta["configs"]), len(results.records)
    out = [("h1", f"Sweep report: {results.path.resolve().name}")]
    if results.finished and "machine" in summary:
        m = summary["machine"]
        if summary.get("scheduler"):
            state = (f"finished in {summary['wall_seconds']:.1f} s on the Dask cluster "
                     f"{summary['scheduler']} (driven from {m['cpu']})")
        else:
            state = (f"finished in {summary['wall_seconds']:.1f} s on {m['cpu']} with "
                     f"{m.get('workers')} worker{'s' if m.get('workers') != 1 else ''}")
    else:
        state = ("finished" if results.finished or results.all_diverged
                 else "not finished (interrupted, or still running)")
    out.append(("p", f"{n_done} of {n_all} configurations recorded; {state}."))
    for note in report.notes:
        out.append(("p", note))
    return out


def _chosen(summary: dict | None) -> list:
    out = []
    if summary is not None:
        b = summary["best"]
        out.append(("h2", "The chosen configuration"))
        out.append(("p", "Chosen by validation accuracy (ties: lower validation loss), then "
                         "evaluated once on the test set."))
        out.append(("table", (["batch size", "learning rate", "epochs", "alpha", "hidden units",
                               "optimizer", "validation accuracy", "test accuracy",
                               "test cross-entropy"],
                              [[b["batch_size"], f"{b['learning_rate']:g}", b["epochs"],
                                f"{b['alpha']:g}", b["hidden_size"], Config.from_dict(b).optimizer,
                                f"{b['val_accuracy']:.4f}",
                                f"{summary['test_accuracy']:.4f}",
                                f"{summary['test_loss']:.4f}"]])))
        per_class = summary["test_per_class_accuracy"]
        out.append(("table", (["test accuracy of", *per_class],
                              [["", *(f"{v:.3f}" for v in per_class.values())]])))
    return out


def _pictures(report: Report) -> list:
    out = []
    for name, (heading, text) in PICTURES.items():
        if name in report.files or (name not in ("confusion.png", "misclassified.png")):
            out.append(("h2", heading))
            out.append(("p", text))
            out.append(("img", name))
    return out


def _every_configuration(results: SweepResults) -> list:
    out = [("h2", "Every configuration, best first")]
    out.append(("p", "train cross-entropy: mean over the last epoch's minibatches; validation "
                     "cross-entropy: on the validation set after it; both without the L2 "
                     "term. objective: train cross-entropy + (alpha/2)(||W1||^2 + ||W2||^2), "
                     "what the optimiser minimised. seconds: wall time of the configuration's training "
                     "(models trained together share it)."))
    rows = []
    for r in results.ranked():
        c = r.config
        f = (lambda v: "" if not np.isfinite(v) else f"{v:.4f}")
        rows.append([c.batch_size, f"{c.learning_rate:g}", c.epochs, f"{c.alpha:g}",
                     c.hidden_size, c.optimizer, f(r.train_loss), f(r.val_loss), f(r.train_objective),
                     f(r.val_accuracy), f"{r.seconds:.2f}", "yes" if r.diverged else "no"])
    out.append(("table", (["batch", "lr", "epochs", "alpha", "hidden", "optimizer",
                           "train cross-entropy",
                           "val cross-entropy", "objective", "val accuracy", "seconds",
                           "diverged"], rows)))
    return out


def _settings(results: SweepResults) -> list:
    meta, summary = results.meta, results.summary
    n_all = len(meta["configs"])
    out = [("h2", "The grid and settings")]
    configs = results.configs
    axis_rows = [[axis, ", ".join(v if isinstance(v, str) else f"{v:g}"
                                  for v in sorted({getattr(c, axis) for c in configs}))]
                 for axis in AXES]
    n_groups = len({c.group_key for c in configs})
    axis_rows += [["configurations", f"{n_all} ({n_groups} training runs: configurations "
                                     f"that differ only in epochs share one)"],
                  ["seed", meta["seed"]], ["validation fraction", meta["val_fraction"]],
                  ["dtype", meta["dtype"]],
                  ["--limit", meta["limit"] if meta["limit"] is not None else "none"]]
    if summary is not None:
        axis_rows += [["training / validation images", f"{summary['n_train']:,} / "
                                                       f"{summary['n_val']:,}"]]
    out.append(("table", (["", ""], axis_rows)))
    return out


def _data(meta: dict, test: Dataset | None) -> list:
    out = [("h2", "The data")]
    data_rows = [["training images and labels used (sha256 of the arrays)", meta["data"]]]
    if test is not None:
        data_rows.append(["read from", str(test.source)])
    data_rows += [[f"{spec.stem}: official sha256 (checked whenever the IDX file is read)",
                   spec.sha256] for spec in OFFICIAL.values()]
    out.append(("table", (["", ""], data_rows)))
    return out


def _machine(results: SweepResults) -> list:
    summary = results.summary
    out = [("h2", "Machine, versions and time")]
    rows = []
    if summary is not None and "machine" in summary:
        m = summary["machine"]
        width = m.get("kernels_width", "avx2 (not recorded: versions before it always built 32-byte kernels)")
        rows += [["sweep: CPU", f"{m['cpu']} ({', '.join(m['simd']) or 'no SIMD flags read'})"],
                 ["sweep: kernels built for", width],
                 ["sweep: CPUs usable / workers", f"{m['cpus_usable']} / {m.get('workers')}"],
                 ["sweep: versions", ", ".join(f"{k} {m[k]}" for k in
                                               ("python", "fastsoftmax", "numpy", "numba",
                                                "llvmlite") if m.get(k))],
                 ["sweep: platform", m["platform"]]]
        wall = f"{summary['wall_seconds']:.1f} s"
        if summary.get("resumed_configs"):
            wall += (f" (the run that finished it; {summary['resumed_configs']} configurations "
                     f"came from earlier, interrupted runs)")
        rows.append(["sweep: wall time", wall])
    else:
        why = ("not recorded: every configuration diverged, so no best.json was written"
               if results.all_diverged else "not finished")
        rows.append(["sweep: wall time", f"{why}; the configurations' own training times sum "
                                         f"to {sum(r.seconds for r in results.records):.1f} s"])
    here = describe()
    import matplotlib
    rows.append(["report made with", f"fastsoftmax {here['fastsoftmax']}, matplotlib "
                                     f"{matplotlib.__version__}, on {here['cpu']}"])
    out.append(("table", (["", ""], rows)))
    return out


def _markdown(results, report, test) -> str:
    lines = []
    for kind, payload in _sections(results, report, test):
        if kind == "h1":
            lines += [f"# {payload}", ""]
        elif kind == "h2":
            lines += [f"## {payload}", ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "img":
            lines += [f"![{PICTURES[payload][0]}]({payload})", ""]
        elif kind == "table":
            header, rows = payload
            cell = (lambda v: str(v).replace("|", "\\|"))
            lines.append("| " + " | ".join(cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.hash { font-family: monospace, monospace; word-break: break-all; }
img { max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
"""


def _html(results, report, test) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{esc(results.path.resolve().name)}: fastsoftmax sweep report</title>",
             f"<style>{_STYLE}</style></head><body>"]
    for kind, payload in _sections(results, report, test):
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{esc(payload)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{esc(payload)}</p>")
        elif kind == "img":
            data = base64.b64encode(report.files[payload]).decode()
            parts.append(f"<p><img alt=\"{esc(PICTURES[payload][0])}\" "
                         f"src=\"data:image/png;base64,{data}\"></p>")
        elif kind == "table":
            header, rows = payload
            parts.append("<table>")
            keyed = not any(header)  # a two-column list of facts: no header, left-aligned
            if not keyed:
                parts.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(_td(v, keyed) for v in row) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _td(value, keyed: bool) -> str:
    text = str(value)
    if len(text) == 64 and all(ch in "0123456789abcdef" for ch in text):
        return f"<td class=\"hash\">{text}</td>"
    try:
        float(text)
        numeric = not keyed
    except ValueError:
        numeric = False
    return f"<td class=\"num\">{html.escape(text)}</td>" if numeric else f"<td>{html.escape(text)}</td>"


# --------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastsoftmax.report",
                                description="Turn a sweep's results folder (--out DIR) into "
                                            "report.html, report.md and PNG pictures there.")
    p.add_argument("folder", metavar="DIR", help="the sweep's --out folder")
    p.add_argument("--data", metavar="DIR",
                   help="the folder with the data files the sweep used (as the sweep's --data; "
                        "needed for the chosen model's test-set pictures)")
    p.add_argument("--top", type=int, default=5, metavar="N",
                   help="how many of the best groups the learning curves show (default 5)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.top < 1:
        print(f"fastsoftmax.report: error: --top must be >= 1, got {args.top}", file=sys.stderr)
        return EXIT_USAGE
    with terminate_as_interrupt():  # SIGTERM stops as Ctrl-C does
        return _main(args)


def _main(args) -> int:
    from .plots import MissingExtra
    try:
        report = build_report(args.folder, data_dir=args.data, top=args.top)
    except MissingExtra as exc:
        print(f"fastsoftmax.report: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except NotASweep as exc:
        print(f"fastsoftmax.report: error: {exc}; nothing written", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, DataError) as exc:
        print(f"fastsoftmax.report: {exc}; nothing written", file=sys.stderr)
        return EXIT_MISSING
    except KeyboardInterrupt:
        return report_stop("fastsoftmax.report", "nothing written")
    try:
        paths = report.write(args.folder)
    except KeyboardInterrupt:  # raised once the set is written
        return report_stop("fastsoftmax.report", "the report was written whole first")
    except OSError as exc:  # a read-only folder, a full disk: each file is whole or absent
        print(f"fastsoftmax.report: {os_failure(exc)}; no file was left half written",
              file=sys.stderr)
        return EXIT_MISSING
    for note in report.notes:
        print(f"fastsoftmax.report: {note}", file=sys.stderr)
    print(f"fastsoftmax.report: wrote {', '.join(p.name for p in paths)} in {args.folder}",
          file=sys.stderr)
    return 0

