"""Pictures of a sweep or a training run, as matplotlib Figures.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot,
so it touches no global state and needs no display: a notebook shows it
inline, ``fig.savefig("x.png")`` writes it (Agg).  matplotlib is the optional
extra ``fastsoftmax[plot]``, imported only when a picture is asked for.

Sources: learning curves take a sweep's results folder (a path or
:class:`fastsoftmax.sweep.results.SweepResults`), ``fs.train(...).history``, or a
fitted ``SoftmaxMLPClassifier`` (its ``loss_curve_`` and, with early
stopping, ``validation_scores_``) or its ``loss_curve_`` list itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data import CLASS_NAMES
from ..sweep.results import Record, SweepResults, read_results

PLOT_EXTRA = ("matplotlib is needed for pictures: pip install 'fastsoftmax[plot]' "
              "(or, in a clone, pip install '.[plot]')")

# Colour maps whose lightness rises monotonically, so they read in grey too.
SEQUENTIAL = "viridis"
# Line styles and markers beside colours: curves stay apart in grey.
STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"),
          ((0, (1, 1)), "P"), ((0, (3, 1, 1, 1, 1, 1)), "X"), ((0, (8, 2)), "*"))


class MissingExtra(ImportError):
    """matplotlib, the extra ``fastsoftmax[plot]``, is not installed."""


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra(PLOT_EXTRA) from None
    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def require_matplotlib() -> None:
    """Raise :class:`MissingExtra` now rather than after a long run."""
    _figure(1, 1)


# --------------------------------------------------------------------------
# what the sources hold, as curves


def label(config) -> str:
    """A configuration's grid point without its epoch count, short enough for a legend."""
    return (f"batch {config.batch_size}, lr {config.learning_rate:g}, "
            f"alpha {config.alpha:g}, hidden {config.hidden_size}"
            + ("" if config.optimizer == "sgd" else f", {config.optimizer}"))


def _results(source, needed_by: str | None = None) -> SweepResults | None:
    """A results folder (path or SweepResults) read; None for another kind of source,
    or, when the picture ``needed_by`` can only draw a folder, a TypeError saying so."""
    if isinstance(source, SweepResults):
        return source
    if isinstance(source, (str, Path)):
        return read_results(source)
    if needed_by is not None:
        raise TypeError(f"{needed_by} needs a results folder or SweepResults, "
                        f"got {type(source).__name__}")
    return None


def group_heads(records: list[Record]) -> list[Record]:
    """One record per group (configurations that differ only in epochs), best group first.

    A group's configurations share one training run, so their histories are
    prefixes of one another: each group is shown by its longest history, and
    ranked by its best configuration.
    """
    longest: dict[tuple, Record] = {}
    for r in records:
        k = r.config.group_key
        if k not in longest or len(r.history["val_accuracy"]) > len(longest[k].history["val_accuracy"]):
            longest[k] = r
    order = []
    for r in sorted(records, key=Record.rank_key):
        k = r.config.group_key
        if k not in order:
            order.append(k)
    return [longest[k] for k in order]


class _Curves:
    """Per-epoch series of one run: train, val (losses) and accuracy, any may be empty."""

    def __init__(self, name, train, val, accuracy, loss_name, diverged=False):
        self.name, self.train, self.val, self.accuracy = name, train, val, accuracy
        self.loss_name, self.diverged = loss_name, diverged


def _curves(source, top: int) -> list[_Curves]:
    results = _results(source)
    if results is not None:
        heads = group_heads(results.records)[:top]
        return [_Curves(label(r.config), r.history["train_loss"], r.history["val_loss"],
                        r.history["val_accuracy"], "cross-entropy (no L2 term)",
                        r.diverged) for r in heads]
    if hasattr(source, "train_loss") and hasattr(source, "val_accuracy"):  # fs.train's History
        return [_Curves("fs.train", list(source.train_loss), list(source.val_loss),
                        list(source.val_accuracy), "loss (cross-entropy + L2 term)")]
    if hasattr(source, "loss_curve_"):  # a fitted SoftmaxMLPClassifier
        scores = getattr(source, "validation_scores_", None) or []
        return [_Curves(type(source).__name__, list(source.loss_curve_), [], list(scores),
                        "loss (cross-entropy + L2 term)")]
    if isinstance(source, Sequence) and all(isinstance(v, (int, float)) for v in source):
        return [_Curves("loss_curve_", [float(v) for v in source], [], [],
                        "loss (cross-entropy + L2 term)")]
    raise TypeError("learning curves need a results folder, SweepResults, fs.train's "
                    f"History, a fitted SoftmaxMLPClassifier or its loss_curve_; "
                    f"got {type(source).__name__}")


def _wants_log(values) -> bool:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0])
    return v.size > 1 and v.max() / v.min() > 20


# --------------------------------------------------------------------------
# the pictures


def learning_curves(source, top: int = 5):
    """Loss (training and validation) and validation accuracy per epoch.

    source : a results folder or SweepResults (its ``top`` best groups), fs.train's
        History, a fitted SoftmaxMLPClassifier, or a loss_curve_ list.
    A sweep's losses are the cross-entropy without the L2 term (so training and
    validation compare); fs.train's and the estimator's include it, and say so.
    """
    curves = _curves(source, top)
    if not curves:
        raise ValueError("no finished configuration to draw")
    has_acc = any(len(c.accuracy) for c in curves)
    fig = _figure(11 if has_acc else 6.5, 4.6)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax = axes[0]
    colours = _colours(len(curves))
    for i, c in enumerate(curves):
        ls, marker = STYLES[i % len(STYLES)]
        every = max(1, len(c.train) // 10)
        epochs = np.arange(1, len(c.train) + 1)
        ax.plot(epochs, c.train, color=colours[i], linestyle=ls, marker=marker, markevery=every,
                label=f"{c.name}" + (" (diverged)" if c.diverged else ""))
        if len(c.val):
            ax.plot(np.arange(1, len(c.val) + 1), c.val, color=colours[i], linestyle=ls,
                    marker=marker, markevery=every, markerfacecolor="white", alpha=0.75)
    ax.set_xlabel("epoch")
    ax.set_ylabel(curves[0].loss_name)
    ax.set_title("loss: training (filled markers) and validation (open markers)"
                 if any(len(c.val) for c in curves) else "training loss")
    if _wants_log([v for c in curves for v in (*c.train, *c.val)]):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    _integer_epochs(ax)
    if has_acc:
        ax = axes[1]
        for i, c in enumerate(curves):
            ls, marker = STYLES[i % len(STYLES)]
            every = max(1, len(c.accuracy) // 10)
            ax.plot(np.arange(1, len(c.accuracy) + 1), c.accuracy, color=colours[i], linestyle=ls,
                    marker=marker, markevery=every)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_title("validation accuracy")
        ax.grid(True, alpha=0.3)
        _integer_epochs(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(len(c.val) for c in curves):  # say which marker is which, in the legend too
        from matplotlib.lines import Line2D
        handles += [Line2D([], [], color="grey", marker="o", linestyle="none"),
                    Line2D([], [], color="grey", marker="o", markerfacecolor="white",
                           linestyle="none")]
        labels += ["filled: training (mean over the epoch's minibatches)",
                   "open: validation (after the epoch)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(2, len(handles)),
               fontsize="small", frameon=False)
    return fig


def curves_grid(source):
    """Small multiples: every group's training and validation cross-entropy per epoch.

    One panel per group (configurations that differ only in epochs), best first,
    on shared axes so panels compare at a glance; each titled with its settings
    and best validation accuracy.
    """
    results = _results(source, "curves_grid")
    heads = group_heads(results.records)
    if not heads:
        raise ValueError(f"{results.path}: no finished configuration to draw")
    best_acc = {}
    for r in results.records:
        k = r.config.group_key
        if np.isfinite(r.val_accuracy):
            best_acc[k] = max(best_acc.get(k, -1.0), r.val_accuracy)
    n = len(heads)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(max(3.1 * cols + 0.4, 7.0), 2.3 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    values = [v for r in heads for v in (*r.history["train_loss"], *r.history["val_loss"])]
    log = _wants_log(values)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        r = heads[i]
        c = r.config
        tl, vl = r.history["train_loss"], r.history["val_loss"]
        ax.plot(np.arange(1, len(tl) + 1), tl, color="#1f4e79", linestyle="-", label="training")
        ax.plot(np.arange(1, len(vl) + 1), vl, color="#d9822b", linestyle="--", label="validation")
        acc = best_acc.get(c.group_key)
        status = "diverged" if r.diverged and acc is None else (
            f"val acc {acc:.3f}" + (", then diverged" if r.diverged else ""))
        opt = "" if c.optimizer == "sgd" else f" {c.optimizer}"
        ax.set_title(f"b{c.batch_size} lr {c.learning_rate:g} a {c.alpha:g} h{c.hidden_size}"
                     f"{opt}\n"
                     f"{status}", fontsize="small")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize="small")
        if log:
            ax.set_yscale("log")
        _integer_epochs(ax)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize="small")
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-entropy", fontsize="small")
    fig.suptitle("every group's learning curves, best first\n(b: batch size, lr: learning "
                 "rate, a: alpha, h: hidden units)")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside lower center", ncols=2,
               frameon=False)
    return fig


def accuracy_heatmaps(source):
    """Validation accuracy over learning rate x alpha, one panel per hidden size x batch size
    (and optimizer, where the grid has several).

    Each cell holds the best validation accuracy over the epoch counts tried
    (and, where epochs vary, the count that reached it); cells whose training
    diverged say so, cells of the grid not (yet) trained are left empty.
    """
    results = _results(source, "accuracy_heatmaps")
    configs = results.configs
    lrs = sorted({c.learning_rate for c in configs})
    alphas = sorted({c.alpha for c in configs})
    hiddens = sorted({c.hidden_size for c in configs})
    batches = sorted({c.batch_size for c in configs})
    optimizers = sorted({c.optimizer for c in configs})
    vary_epochs = len({c.epochs for c in configs}) > 1
    best: dict[tuple, tuple[float, int]] = {}
    diverged: set = set()
    for r in results.records:
        k = r.config.group_key
        if r.diverged and not np.isfinite(r.val_accuracy):
            diverged.add(k)
            continue
        if k not in best or r.val_accuracy > best[k][0]:
            best[k] = (r.val_accuracy, r.config.epochs)
    finite = [v for v, _ in best.values()]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo < 1e-3:
        lo, hi = lo - 0.005, hi + 0.005
    row_keys = [(h, o) for h in hiddens for o in optimizers]
    rows, cols = len(row_keys), len(batches)
    cell = 0.95 if vary_epochs else 0.8
    fig = _figure(max(4.2, cols * (len(lrs) * cell + 1.3) + 1.2),
                  max(3.2, rows * (len(alphas) * 0.6 + 1.1) + 1.0))
    axes = fig.subplots(rows, cols, squeeze=False)
    from matplotlib import colormaps
    cmap = colormaps[SEQUENTIAL]
    image = None
    for i, (h, o) in enumerate(row_keys):
        for j, b in enumerate(batches):
            ax = axes[i, j]
            grid = np.full((len(alphas), len(lrs)), np.nan)
            for yi, a in enumerate(alphas):
                for xi, lr in enumerate(lrs):
                    k = (b, lr, a, h, o)
                    if k in best:
                        grid[yi, xi] = best[k][0]
            image = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
            ax.set_facecolor("#f2f2f2")
            for yi, a in enumerate(alphas):
                for xi, lr in enumerate(lrs):
                    k = (b, lr, a, h, o)
                    if k in best:
                        v, e = best[k]
                        dark = (v - lo) / (hi - lo) < 0.55
                        text = f"{v:.3f}" + (f"\n{e} ep" if vary_epochs else "")
                        ax.text(xi, yi, text, ha="center", va="center", fontsize="small",
                                color="white" if dark else "black")
                    elif k in diverged:
                        ax.add_patch(_hatched(xi, yi))
                        ax.text(xi, yi, "diverged", ha="center", va="center", fontsize="small",
                                color="black", bbox=dict(facecolor="white", edgecolor="none",
                                                         pad=1.0))
                    elif any(c.group_key == k for c in configs):
                        ax.text(xi, yi, "not run\nyet", ha="center", va="center",
                                fontsize="x-small", color="#555555")
            ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
            ax.set_yticks(range(len(alphas)), [f"{v:g}" for v in alphas])
            ax.set_xlabel("learning rate")
            ax.set_ylabel("alpha (L2)")
            ax.set_title(f"hidden {h}, batch {b}" + (f", {o}" if len(optimizers) > 1 else ""),
                         fontsize="medium")
    bar = fig.colorbar(image, ax=axes, shrink=0.9)
    bar.set_label("validation accuracy")
    fig.suptitle("validation accuracy" + (" (best over the epoch counts; ep: the count that "
                                          "reached it)" if vary_epochs else ""))
    return fig


def confusion_matrix(y_true, y_pred, class_names=CLASS_NAMES):
    """Confusion matrix of a model on a labelled set, and its per-class accuracy.

    y_true, y_pred : (n,) int labels in 0 .. len(class_names) - 1.  Cells hold
    counts; their shade is the fraction of that true class (each row sums to 1).
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    K = len(class_names)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} "
                         f"and {y_pred.shape}")
    counts = np.zeros((K, K), np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    per_row = counts.sum(axis=1, keepdims=True)
    frac = counts / np.maximum(per_row, 1)
    accuracy = np.diag(frac)
    fig = _figure(12.5, 6.2)
    ax, bx = fig.subplots(1, 2, width_ratios=[1.55, 1])
    from matplotlib import colormaps
    cmap = colormaps[SEQUENTIAL]
    image = ax.imshow(frac, cmap=cmap, vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize="small",
                        color="white" if frac[i, j] < 0.55 else "black")
    ax.set_xticks(range(K), class_names, rotation=40, ha="right")
    ax.set_yticks(range(K), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix on {len(y_true):,} test images (counts)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    # Worst at the top, where a reader starts; values inside the bars' left
    # ends, where the line of the overall accuracy never crosses them.
    order = np.argsort(accuracy, kind="stable")
    bx.barh(range(K), accuracy[order], color="#4a6fa5")
    for pos, k in enumerate(order):
        inside = accuracy[k] >= 0.12
        bx.text(0.015 if inside else accuracy[k] + 0.015, pos, f"{accuracy[k]:.3f}",
                va="center", fontsize="small", color="white" if inside else "black")
    bx.set_yticks(range(K), [class_names[k] for k in order])
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    overall = float(np.mean(y_true == y_pred))
    bx.axvline(overall, color="black", linestyle="--", linewidth=1)
    bx.set_xlabel(f"accuracy (recall) of the class; dashed line: overall, {overall:.3f}")
    bx.set_title("per-class accuracy, worst first")
    bx.grid(True, axis="x", alpha=0.3)
    return fig


def misclassified(images, y_true, proba, class_names=CLASS_NAMES, count: int = 24,
                  shape=(28, 28)):
    """The ``count`` test images the model got wrong with most confidence.

    images : (n, 784) pixels (uint8, or floats in [0, 1]); y_true : (n,) labels;
    proba : (n, K) the model's class probabilities.  Each image is titled with
    its true class and the predicted one, with the probability given to it.
    """
    images = np.asarray(images)
    y_true = np.asarray(y_true, np.int64)
    proba = np.asarray(proba)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    # Most confident first; ties by position, so the picture is the same every time.
    wrong = wrong[np.lexsort((wrong, -proba[wrong, pred[wrong]]))][:count]
    if not len(wrong):
        fig = _figure(6, 1.2)
        fig.text(0.5, 0.5, f"none of the {len(y_true):,} images was misclassified",
                 ha="center", va="center")
        return fig
    cols = 8
    rows = max(1, math.ceil(len(wrong) / cols))
    fig = _figure(1.55 * cols, 1.95 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i].reshape(shape), cmap="gray_r", vmin=0,
                  vmax=255 if images.dtype == np.uint8 else 1.0, interpolation="nearest")
        ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[pred[i]]} "
                     f"{proba[i, pred[i]]:.0%}", fontsize="x-small")
    fig.suptitle(f"the {len(wrong)} test images misclassified with most confidence "
                 f"(of {int((pred != y_true).sum()):,} misclassified)")
    return fig


# --------------------------------------------------------------------------


def _colours(n: int):
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _hatched(x, y):
    from matplotlib.patches import Rectangle
    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="#d0d0d0", edgecolor="#808080",
                     hatch="///", linewidth=0)
