"""A sweep's results folder, read back: what ``python -m fastsoftmax.sweep --out DIR`` wrote.

The folder holds ``sweep.json`` (the grid and settings, written first),
``results.jsonl`` (a line per finished configuration), and once the sweep has
finished ``best.json`` (the summary) and ``best_params.npz`` (the chosen
model).  Reading never writes: a torn last line, left by a crash mid-write, is
skipped here and repaired by the sweep when it resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .grid import Config
from .params import Params, load_params
from .sweep import Record

# Bumped when what results.jsonl means changes (2: train_loss is the
# cross-entropy alone, as val_loss; the objective has its own key).
RESULTS_FORMAT = 2


def earlier_format(meta: dict) -> str | None:
    """What is wrong with sweep.json's ``meta`` if an earlier fastsoftmax wrote it, else None."""
    if meta.get("format") == RESULTS_FORMAT:
        return None
    return (f"results of an earlier fastsoftmax (format {meta.get('format', 1)}, where "
            f"train_loss included the L2 term)")


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
    why = earlier_format(meta)
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
