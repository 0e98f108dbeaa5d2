"""A sweep's results: a configuration's :class:`Record`, and the results folder that
``python -m fastsoftmax.sweep --out DIR`` writes (:class:`ResultsFolder`) and
:func:`read_results` reads back.

The folder holds ``sweep.json`` (the grid and settings, written first),
``results.jsonl`` (a line per finished configuration), and once the sweep has
finished ``best.json`` (the summary) and ``best_params.npz`` (the chosen
model).  Reading never writes: a torn last line, left by a crash mid-write, is
skipped here and repaired by the sweep when it resumes.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..host.atomic import atomic_open
from ..params import Params, load_params, save_params
from .grid import Config

# Bumped when what results.jsonl means changes (2: train_loss is the
# cross-entropy alone, as val_loss; the objective has its own key).
RESULTS_FORMAT = 2


def other_format(meta: dict) -> str | None:
    """What is wrong with sweep.json's ``meta`` if an earlier or a newer fastsoftmax wrote
    it, else None."""
    fmt = meta.get("format", 1)
    if fmt == RESULTS_FORMAT:
        return None
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > RESULTS_FORMAT:
        return (f"results of a newer fastsoftmax (format {fmt}; this one reads format "
                f"{RESULTS_FORMAT}: upgrade it to read them)")
    return (f"results of an earlier fastsoftmax (format {fmt}, where train_loss included the "
            f"L2 term)")


@dataclass
class Record:
    """The result of one configuration.

    The two losses are the same quantity, comparable with each other: the
    mean cross-entropy, without the L2 term.  train_loss averages it over the
    epoch's minibatches (each weighted by its size, at the weights it was
    computed with), val_loss over the validation set after the epoch.
    train_objective is what the optimiser minimised: train_loss plus the L2 term
    (alpha/2)(||W1||^2 + ||W2||^2), averaged the same way.

    history holds per-epoch lists train_loss, train_objective, val_loss,
    val_accuracy (up to the configuration's epochs, or to the epoch before
    divergence).  Final values are those of the last epoch; NaN when the
    configuration diverged.
    seconds is the wall time from the start of the configuration's pack to the
    end of its last epoch (the models of a pack train together and share it).
    """

    config: Config
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    diverged: bool
    history: dict = field(default_factory=dict)
    train_objective: float = float("nan")

    def __post_init__(self):
        # Kept to 0.1 ms, as results.jsonl stores it: the table a run prints as it
        # trains and the one a rerun prints from the file must read the same.
        self.seconds = round(float(self.seconds), 4)

    def as_dict(self) -> dict:
        def clean(v):  # JSON has no NaN: a diverged value is null
            return None if isinstance(v, float) and not np.isfinite(v) else v
        out = self.config.as_dict()
        out.update(train_loss=clean(self.train_loss),
                   train_objective=clean(self.train_objective), val_loss=clean(self.val_loss),
                   val_accuracy=clean(self.val_accuracy), seconds=self.seconds,
                   diverged=self.diverged,
                   history={k: [clean(x) for x in v] for k, v in self.history.items()})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        def num(v):
            return float("nan") if v is None else float(v)
        config = Config.from_dict(d)
        history = {k: [num(x) for x in v] for k, v in d["history"].items()}
        if "train_objective" not in d or "train_objective" not in d["history"]:
            # Before it, train_loss held the objective: refuse rather than mislabel.
            raise KeyError("train_objective")
        return cls(config, num(d["train_loss"]), num(d["val_loss"]), num(d["val_accuracy"]),
                   float(d["seconds"]), bool(d["diverged"]), history,
                   num(d["train_objective"]))

    def rank_key(self):
        """Best first: highest validation accuracy, then lowest validation loss."""
        acc = self.val_accuracy if np.isfinite(self.val_accuracy) else -1.0
        loss = self.val_loss if np.isfinite(self.val_loss) else np.inf
        return (-acc, loss, self.config)


@dataclass
class SweepOutput:
    records: list  # Record per configuration, in grid order
    params: dict  # Config -> Params of the trained model (not for diverged ones)
    interrupted: bool



class NotASweep(ValueError):
    """The folder is not a sweep's results folder, or not one this version reads."""


def parse_records(lines: list[bytes], path) -> tuple[list[Record], list[bytes], bool]:
    """The records of results.jsonl's ``lines``.

    Returns (records, the lines they came from, whether the last line was
    torn).  A bad line anywhere but last raises :class:`NotASweep` naming it.
    """
    records, good, torn = [], [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(Record.from_dict(json.loads(line)))
            good.append(line)
        except (ValueError, KeyError, TypeError):
            if i >= len(lines) - 2:  # the last line (a final newline leaves one empty after it)
                torn = True
                break
            raise NotASweep(f"{path}: line {i + 1} is not a result record")
    return records, good, torn


@dataclass
class SweepResults:
    """A results folder in memory.

    path : Path of the folder
    meta : dict, sweep.json: configs, seed, val_fraction, dtype, limit, data (a
        SHA-256 of the training images and labels used), format
    records : list of Record, in the order they finished
    summary : dict or None, best.json (None until the sweep has finished)
    """

    path: Path
    meta: dict
    records: list
    summary: dict | None

    @property
    def configs(self) -> list[Config]:
        return [Config(**c) for c in self.meta["configs"]]

    @property
    def finished(self) -> bool:
        """Every configuration recorded and the summary written."""
        return self.summary is not None and len(self.records) >= len(self.meta["configs"])

    @property
    def all_diverged(self) -> bool:
        """Every configuration recorded, and every one diverged: no model to choose."""
        return (len(self.records) >= len(self.meta["configs"])
                and all(r.diverged for r in self.records))

    def ranked(self) -> list[Record]:
        """The records best first (validation accuracy, then validation loss)."""
        return sorted(self.records, key=Record.rank_key)

    def best_params(self) -> Params | None:
        """The chosen model (best_params.npz), or None before the sweep has finished."""
        if self.summary is None or not (self.path / "best_params.npz").exists():
            return None
        try:
            return load_params(self.path / "best_params.npz")
        except ValueError as exc:
            raise NotASweep(str(exc)) from None


def read_results(path) -> SweepResults:
    """Read a results folder; :class:`NotASweep` (naming the file) if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise NotASweep(f"{path}: not a directory")
    meta_path = path / "sweep.json"
    if not meta_path.is_file():
        raise NotASweep(f"{path}: no sweep.json, so not a sweep's results folder "
                        f"(python -m fastsoftmax.sweep --out DIR makes one)")
    try:
        meta = json.loads(meta_path.read_text())
        [Config(**c) for c in meta["configs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotASweep(f"{meta_path}: not a sweep's settings ({exc})") from None
    why = other_format(meta)
    if why is not None:
        raise NotASweep(f"{meta_path}: {why}; run the sweep again into a new folder")
    jsonl = path / "results.jsonl"
    lines = jsonl.read_bytes().split(b"\n") if jsonl.exists() else []
    records, _, _ = parse_records(lines, jsonl)
    summary = None
    if (path / "best.json").exists():
        try:
            summary = json.loads((path / "best.json").read_text())
            summary["best"]["val_accuracy"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotASweep(f"{path / 'best.json'}: not a sweep's summary ({exc})") from None
    return SweepResults(path, meta, records, summary)


# --------------------------------------------------------------------------
# the folder, written


class FolderRefused(ValueError):
    """A folder the sweep will not write to: another sweep's, not a sweep's and not
    empty, or in use by a sweep running now.  Nothing was written."""


# The CSV's header names each loss for what it is: Record.train_loss and
# val_loss are both the mean cross-entropy (comparable), train_objective adds L2.
COLUMNS = ("batch_size", "learning_rate", "epochs", "alpha", "hidden_size", "optimizer",
           "train_cross_entropy", "val_cross_entropy", "train_objective", "val_accuracy",
           "seconds", "diverged")

TABLE_LEGEND = ("train_ce, val_ce: mean cross-entropy (no L2 term) over the last epoch's "
                "minibatches and on the validation set; objective: train_ce + "
                "(alpha/2)(||W1||^2 + ||W2||^2), what the optimiser minimised")

# The summary's facts of the run that trained: a rerun that trains nothing keeps them.
RUN_FACTS = ("wall_seconds", "resumed_configs", "machine", "scheduler")


def _row(r: Record):
    c = r.config
    return (c.batch_size, c.learning_rate, c.epochs, c.alpha, c.hidden_size, c.optimizer,
            r.train_loss, r.val_loss, r.train_objective, r.val_accuracy, r.seconds, r.diverged)


def format_table(records: list[Record]) -> str:
    """The records, one line each, in the order given, and a legend for the losses."""
    lines = [f"{'batch':>5} {'lr':>8} {'epochs':>6} {'alpha':>8} {'hidden':>6} "
             f"{'optimizer':>9} {'train_ce':>8} {'val_ce':>8} {'objective':>9} {'val_acc':>7} "
             f"{'seconds':>7} diverged"]
    for r in records:
        b, lr, e, a, h, o, tl, vl, ob, va, s, d = _row(r)
        lines.append(f"{b:>5} {lr:>8.3g} {e:>6} {a:>8.3g} {h:>6} {o:>9} {tl:>8.4f} {vl:>8.4f} "
                     f"{ob:>9.4f} {va:>7.4f} {s:>7.2f} {'yes' if d else 'no'}")
    lines.append(TABLE_LEGEND)
    return "\n".join(lines)


def _csv(records) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in records:
        w.writerow(_row(r))
    return buf.getvalue()


def _atomic_write(path: Path, text: str):
    with atomic_open(path, "w") as f:
        f.write(text)


def _with_optimizers(meta: dict) -> dict:
    """sweep.json's meta with every configuration's optimizer spelled out: a sweep
    from before the optimizer axis trained plain SGD, and resumes as such."""
    try:
        return dict(meta, configs=[Config(**c).as_dict() for c in meta["configs"]])
    except (KeyError, TypeError):
        return meta  # not comparable: the caller names the difference


class ResultsFolder:
    """A sweep's ``--out`` folder as the sweep writes it; :func:`read_results` reads it.

    :meth:`open` creates it or resumes it, :meth:`append` adds a record as each
    configuration finishes (on disk at once), :meth:`write_best` writes the summary
    files once the sweep has finished, each whole or not at all.  From :meth:`open` to
    :meth:`release` (or this process's end) the folder is this sweep's alone: another
    sweep opening it is refused, where two would have written every record twice.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._jsonl = None
        self._held = None  # the folder's descriptor, locked while this sweep runs

    def open(self, meta: dict, warn=None) -> list[Record]:
        """Create the folder with sweep.json's ``meta``, or resume it: the records already
        there.  :class:`FolderRefused` for a folder of another sweep, or not a sweep's and
        not empty, or in use by a sweep running now; warn(text) hears of a torn last line
        dropped."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._hold()
        try:
            return self._open(meta, warn)
        except BaseException:
            self.release()
            raise

    def _hold(self) -> None:
        """Lock the folder itself (flock on its descriptor: no file of its own, and the
        lock goes with the process, however it ends)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderRefused(f"--out {self.path} is in use by another sweep running now; "
                                f"wait for it to end, or use another --out") from None
        self._held = fd

    def release(self) -> None:
        """Close results.jsonl and let other sweeps open the folder."""
        self.close()
        if self._held is not None:
            os.close(self._held)
            self._held = None

    def _open(self, meta: dict, warn) -> list[Record]:
        out, meta_path = self.path, self.path / "sweep.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except ValueError:
                raise FolderRefused(f"{meta_path}: unreadable; refusing to mix results")
            why = other_format(old)
            if why is not None:
                raise FolderRefused(f"--out {out} holds {why}; refusing to mix results "
                                    f"(use another --out)")
            old = _with_optimizers(old)
            if old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise FolderRefused(f"--out {out} holds a sweep with different "
                                    f"{', '.join(diff)}; refusing to mix results "
                                    f"(use another --out)")
            done = self._read_records(warn)
        else:
            if any(out.iterdir()):
                raise FolderRefused(f"--out {out} is not empty and holds no sweep; "
                                    f"refusing to mix results")
            _atomic_write(meta_path, json.dumps(meta, indent=1) + "\n")
            done = []
        self._jsonl = open(out / "results.jsonl", "a")
        return done

    def _read_records(self, warn) -> list[Record]:
        """Records of results.jsonl; a torn last line (a crash mid-write) is dropped."""
        path = self.path / "results.jsonl"
        if not path.exists():
            return []
        try:
            records, good, torn = parse_records(path.read_bytes().split(b"\n"), path)
        except NotASweep as exc:
            raise FolderRefused(f"{exc}; refusing to mix results (use another --out)") from None
        if torn:  # repair by dropping it
            if warn is not None:
                warn(f"{path}: dropped a torn last line; that configuration runs again")
            _atomic_write(path, "".join(x.decode() + "\n" for x in good))
        return records

    def append(self, rec: Record) -> None:
        """One line for a finished configuration, on disk before this returns."""
        self._jsonl.write(json.dumps(rec.as_dict()) + "\n")
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def write_best(self, params: Params, ranked: list[Record], summary: dict) -> None:
        """best_params.npz, results.csv and best.json, each whole; best.json, written
        last, means the other two are there."""
        save_params(self.path / "best_params.npz", params)
        _atomic_write(self.path / "results.csv", _csv(ranked))
        _atomic_write(self.path / "best.json", json.dumps(summary, indent=1) + "\n")

    def previous_summary(self) -> dict:
        """best.json as a finished earlier run wrote it, or {} (none, or unreadable)."""
        try:
            saved = json.loads((self.path / "best.json").read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def saved_best(self, previous: dict, best: Record, shape: tuple, dtype) -> Params | None:
        """The best model's parameters as a finished earlier run (its summary ``previous``)
        left them, or None when they are missing, of another ``shape`` = (n_features,
        n_hidden, n_classes) or dtype, or belong to another configuration."""
        try:
            same = Config.from_dict(previous["best"]) == best.config
            params = load_params(self.path / "best_params.npz")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not same or params.shape != tuple(shape) or params.dtype != dtype:
            return None
        return params
