"""Sweep reports: every file written and sound, partial and one-value grids, bad folders."""

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastsoftmax as fs
from fastsoftmax import cli, report
from fastsoftmax.report import plots

from helpers import SMALL_ARGS, make_data

PNGS = ("learning_curves.png", "accuracy_heatmaps.png", "confusion.png", "misclassified.png",
        "all_curves.png")
# Two values on every axis but epochs' three, one hidden size: 24 configurations, 8 runs.
TWO_BY_TWO = ["--batch-sizes", "16,64", "--learning-rates", "0.03,0.1", "--epochs", "1,2,3",
              "--alphas", "1e-4,1e-2", "--hidden-sizes", "5", "--limit", "500"]


def sweep(tmp_path, data_dir, *argv, name="out"):
    out = tmp_path / name
    code = cli.main([str(a) for a in ("--data", data_dir, "--out", out, "--quiet", *argv)])
    assert code == 0
    return out


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class _Page(HTMLParser):
    """Collects img sources, headings and text; fails on tags left open."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self.text, self.stack = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("h1", "h2"):
            self.headings.append(data)
        self.text.append(data)


def parse_html(path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    page.close()
    assert page.stack == [], page.stack
    return page


def check_png(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import io
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        assert 400 <= w <= 2500 and 250 <= h <= 2500, im.size
        # not blank: a picture has many shades
        assert len(im.convert("L").getcolors(maxcolors=256 * 256) or range(1000)) > 20


def test_report_of_a_finished_sweep(tmp_path, data_dir, capsys):
    out = sweep(tmp_path, data_dir, *TWO_BY_TWO, "--report")
    written = files(out)
    for name in (*PNGS, "report.html", "report.md"):
        assert written.get(name), f"{name} missing or empty"
    for name in PNGS:
        check_png(written[name])
    page = parse_html(out / "report.html")
    # every picture inline, byte for byte the PNG beside it; nothing fetched from anywhere
    inline = [img["src"] for img in page.images]
    assert len(inline) == len(PNGS)
    assert sorted(base64.b64decode(src.split(",", 1)[1]) for src in inline) == \
        sorted(written[name] for name in PNGS)
    assert all(src.startswith("data:image/png;base64,") for src in inline)
    html_text = (out / "report.html").read_text()
    assert "<script" not in html_text and "http" not in html_text
    md = (out / "report.md").read_text()
    for name in PNGS:
        assert f"]({name})" in md
    best = json.loads((out / "best.json").read_text())
    text = " ".join(page.text)
    assert f"{best['test_accuracy']:.4f}" in text
    assert f"24 of 24 configurations recorded; finished in {best['wall_seconds']:.1f} s" in text
    assert all(name in text for name in fs.CLASS_NAMES)
    assert best["machine"]["cpu"] in text and f"{best['wall_seconds']:.1f} s" in text
    assert f"kernels built for {best['machine']['kernels_width']}" in text
    sweep_json = json.loads((out / "sweep.json").read_text())
    assert sweep_json["data"] in text
    # every configuration in the table, with the losses named for what they are
    assert len(best) and text.count("train cross-entropy") >= 1
    rows = [line for line in md.splitlines()
            if line.count("|") == 13 and line.startswith(("| 16 |", "| 64 |"))]
    assert len(rows) == 24
    # python -m fastsoftmax.report redraws the same pictures
    for name in PNGS:
        (out / name).unlink()
    assert report.main([str(out), "--data", str(data_dir)]) == 0
    again = files(out)
    assert again.keys() == written.keys()
    assert again["report.md"] == written["report.md"]


def test_partial_sweep_reports_what_there_is(tmp_path, data_dir):
    out = sweep(tmp_path, data_dir, *TWO_BY_TWO)
    # as an interrupted sweep leaves it: no summary, no model, some records
    (out / "best.json").unlink()
    (out / "best_params.npz").unlink()
    (out / "results.csv").unlink()
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:30])  # torn too
    before = (out / "results.jsonl").read_bytes()
    assert report.main([str(out), "--data", str(data_dir)]) == 0
    assert (out / "results.jsonl").read_bytes() == before  # reading never repairs
    for name in ("learning_curves.png", "accuracy_heatmaps.png", "all_curves.png"):
        check_png((out / name).read_bytes())
    assert not (out / "confusion.png").exists() and not (out / "misclassified.png").exists()
    text = " ".join(parse_html(out / "report.html").text)
    assert "5 of 24 configurations recorded" in text and "not finished" in text
    assert "test-set pictures are missing" in text
    # the heatmaps say which cells are still to come
    fig = plots.accuracy_heatmaps(out)
    shown = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("not run" in s for s in shown)


@pytest.mark.parametrize("extra", [[], ["--sample", "2"]], ids=["one-value", "sample"])
def test_one_value_per_axis_and_a_sample(tmp_path, data_dir, extra):
    argv = SMALL_ARGS if extra else ["--batch-sizes", "16", "--learning-rates", "0.1",
                                     "--epochs", "2", "--alphas", "1e-3", "--hidden-sizes", "5",
                                     "--limit", "500"]
    out = sweep(tmp_path, data_dir, *argv, *extra, "--report")
    for name in PNGS:
        check_png((out / name).read_bytes())
    assert len(parse_html(out / "report.html").images) == len(PNGS)


def test_a_sweep_where_everything_diverged_still_reports(tmp_path, data_dir, capsys):
    out = tmp_path / "out"
    code = cli.main([str(a) for a in ("--data", data_dir, "--out", out, "--quiet", "--report",
                                      "--batch-sizes", "16", "--learning-rates", "1000",
                                      "--epochs", "2", "--alphas", "1e-3", "--hidden-sizes",
                                      "5,10", "--limit", "500")])
    assert code == 1 and "every configuration diverged" in capsys.readouterr().err
    text = " ".join(parse_html(out / "report.html").text)
    assert "Every configuration diverged" in text and "not finished" not in text
    assert not (out / "confusion.png").exists()


def test_a_missing_model_file_is_said_so(tmp_path, data_dir):
    out = sweep(tmp_path, data_dir, *SMALL_ARGS)
    (out / "best_params.npz").unlink()
    assert report.main([str(out), "--data", str(data_dir)]) == 0
    text = " ".join(parse_html(out / "report.html").text)
    assert "best_params.npz is missing" in text and "not finished" not in text


def test_diverged_cells_are_marked(tmp_path, data_dir):
    out = sweep(tmp_path, data_dir, "--batch-sizes", "16", "--learning-rates", "0.1,1000",
                "--epochs", "2", "--alphas", "1e-4", "--hidden-sizes", "5", "--limit", "500")
    fig = plots.accuracy_heatmaps(out)
    shown = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "diverged" in shown and sum(s.startswith("0.") or s.startswith("1.") for s in shown) == 1
    assert report.main([str(out), "--data", str(data_dir)]) == 0
    assert "| yes |" in (out / "report.md").read_text()


@pytest.mark.parametrize("make", ["missing", "empty", "not a sweep", "a file", "old format",
                                  "garbled line", "no results yet"])
def test_a_folder_that_is_not_a_sweep_is_refused_and_left_alone(tmp_path, data_dir, capsys,
                                                                 make):
    folder = tmp_path / "f"
    if make == "a file":
        folder.write_text("x")
    elif make != "missing":
        folder.mkdir()
    if make == "not a sweep":
        (folder / "notes.txt").write_text("hello")
    elif make in ("old format", "garbled line", "no results yet"):
        src = sweep(tmp_path, data_dir, *SMALL_ARGS, name="src")
        (folder / "sweep.json").write_text((src / "sweep.json").read_text())
        if make == "old format":
            meta = json.loads((src / "sweep.json").read_text())
            del meta["format"]
            (folder / "sweep.json").write_text(json.dumps(meta))
            (folder / "results.jsonl").write_text((src / "results.jsonl").read_text())
        elif make == "garbled line":
            lines = (src / "results.jsonl").read_text().splitlines()
            (folder / "results.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    before = files(folder) if folder.is_dir() else None
    capsys.readouterr()
    assert report.main([str(folder), "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err and "nothing written" in err
    if before is not None:
        assert files(folder) == before


def test_data_other_than_the_sweeps_is_refused(tmp_path, data_dir, capsys):
    out = sweep(tmp_path, data_dir, *SMALL_ARGS)
    meta = json.loads((out / "sweep.json").read_text())
    meta["data"] = "0" * 64
    (out / "sweep.json").write_text(json.dumps(meta))
    before = files(out)
    assert report.main([str(out), "--data", str(data_dir)]) == 1
    assert "not the data the sweep" in capsys.readouterr().err
    assert files(out) == before


BLOCK_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; "


def test_without_matplotlib_one_line_naming_the_extra(tmp_path, data_dir):
    out = sweep(tmp_path, data_dir, *SMALL_ARGS)
    before = files(out)
    run = subprocess.run([sys.executable, "-c", BLOCK_MATPLOTLIB +
                          "from fastsoftmax.report import main; sys.exit(main(sys.argv[1:]))",
                          str(out), "--data", str(data_dir)], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1 and "fastsoftmax[plot]" in run.stderr
    assert files(out) == before
    # the sweep says so before it trains anything
    fresh = tmp_path / "fresh"
    run = subprocess.run([sys.executable, "-c", BLOCK_MATPLOTLIB +
                          "from fastsoftmax.cli import main; sys.exit(main(sys.argv[1:]))",
                          "--data", str(data_dir), "--out", str(fresh), "--report",
                          *SMALL_ARGS], capture_output=True, text=True)
    assert run.returncode == 1 and "fastsoftmax[plot]" in run.stderr
    assert "training" not in run.stderr and not fresh.exists()


def test_pictures_from_python(tmp_path, data_dir):
    X, y = make_data(300, seed=1, dtype=np.float32)
    Xv, yv = make_data(100, seed=2, dtype=np.float32)
    result = fs.train(X, y, hidden_size=6, epochs=4, X_val=Xv, y_val=yv)
    fig = plots.learning_curves(result.history)
    loss_ax, acc_ax = fig.axes[:2]
    assert "L2" in loss_ax.get_ylabel() and acc_ax.get_ylabel() == "validation accuracy"
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), result.history.train_loss)
    np.testing.assert_array_equal(acc_ax.lines[0].get_ydata(), result.history.val_accuracy)
    curve = plots.learning_curves([2.0, 1.5, 1.2])
    assert len(curve.axes) == 1 and list(curve.axes[0].lines[0].get_ydata()) == [2.0, 1.5, 1.2]
    pytest.importorskip("sklearn", reason="the estimator needs scikit-learn (the test extra)")
    clf = fs.SoftmaxMLPClassifier(hidden_size=6, epochs=3, random_state=0, tol=None).fit(X, y)
    fig = plots.learning_curves(clf)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), clf.loss_curve_)
    with pytest.raises(TypeError, match="learning curves need"):
        plots.learning_curves(42)
    # a folder, as a notebook user passes it
    out = sweep(tmp_path, data_dir, *TWO_BY_TWO)
    fig = plots.learning_curves(out, top=3)
    assert len(fig.axes[0].get_legend_handles_labels()[1]) == 3
    assert len([ax for ax in plots.curves_grid(str(out)).axes if ax.get_visible()]) == 8
    cm = plots.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"])
    assert [t.get_text() for t in cm.axes[0].get_yticklabels()] == ["a", "b", "c"]


def test_matplotlib_is_imported_only_for_pictures():
    code = ("import sys, fastsoftmax, fastsoftmax.cli, fastsoftmax.report, fastsoftmax.report.plots; "
            "assert 'matplotlib' not in sys.modules, 'imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_corrupt_model_file_is_refused_and_nothing_written(tmp_path, data_dir, capsys):
    out = sweep(tmp_path, data_dir, *SMALL_ARGS)
    (out / "best_params.npz").write_bytes(b"not an archive")
    before = files(out)
    assert report.main([str(out), "--data", str(data_dir)]) == 2
    assert "best_params.npz: not a fastsoftmax params file" in capsys.readouterr().err
    assert files(out) == before


def test_a_folder_it_cannot_write_is_one_line(tmp_path, capsys, monkeypatch):
    """#35: a read-only folder (or a full disk) is the path and the errno's words, exit 1,
    no traceback, and no file left half written: the files before the refusal whole, none
    after.  (Permissions do not stop root, so the refusal is simulated, at the second file.)"""
    import errno
    import os

    from fastsoftmax.report import pages

    built = pages.Report({"report.md": b"# a report\n", "report.html": b"<html></html>\n"})
    monkeypatch.setattr(pages, "build_report", lambda *args, **kwargs: built)
    real = pages.atomic_open

    def refused(path, *args, **kwargs):
        if path.name == "report.html":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pages, "atomic_open", refused)
    assert report.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'report.html'}: Permission denied; no file was left half" in err
    assert [(p.name, p.read_bytes()) for p in tmp_path.iterdir()] == \
        [("report.md", b"# a report\n")]
