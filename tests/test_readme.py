"""The README's Python examples run as written, in order, on the real data."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 3


@pytest.mark.realdata
# the estimator example keeps MLPClassifier's default tol, which warns at the last epoch
@pytest.mark.filterwarnings("ignore:SoftmaxMLPClassifier. reached epochs")
def test_readme_examples_run(real_data, tmp_path, monkeypatch):
    pytest.importorskip("sklearn", reason="the estimator example needs scikit-learn "
                        "(fastsoftmax[sklearn], part of fastsoftmax[test])")
    monkeypatch.chdir(tmp_path)  # the examples write model.npz and clf.npz
    namespace = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["accuracy"] > 0.8
    # the estimator's documented configuration (the defaults, 20 epochs), saved and loaded
    clf, data = namespace["clf"], namespace["data"]
    assert clf.score(data.test_images / 255.0, data.test_labels) >= 0.87
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "clf.npz").is_file()
    for picture in ("curves.png", "confusion.png", "wrong.png"):
        assert (tmp_path / picture).stat().st_size > 10_000


def test_every_sweep_option_is_documented():
    from fastsoftmax.cli import build_parser

    text = README.read_text()
    flags = [f for action in build_parser()._actions for f in action.option_strings
             if f.startswith("--") and f != "--help"]
    assert len(flags) >= 16
    missing = [f for f in flags if f"`{f}" not in text]
    assert not missing, f"options missing from README.md: {missing}"
    for name in ("sweep.json", "results.jsonl", "results.csv", "best.json", "best_params.npz",
                 "fastsoftmax-sweep", "every configuration diverged"):
        assert name in text, name


def test_every_report_option_is_documented():
    from fastsoftmax.report import build_parser

    text = README.read_text()
    flags = [f for action in build_parser()._actions for f in action.option_strings
             if f.startswith("--") and f != "--help"]
    assert flags == ["--data", "--top"]
    assert all(f"`{f}" in text for f in flags)
    for picture in ("learning_curves", "accuracy_heatmaps", "confusion", "misclassified",
                    "all_curves"):
        assert (README.parent / "docs" / "report" / f"{picture}.png").is_file()
        assert f"docs/report/{picture}.png" in text


def test_newcomer_commands_install_venv_support():
    first_lines = [l for l in README.read_text().splitlines()[:12] if "apt-get install" in l]
    assert len(first_lines) == 2 and all("python3-venv" in l for l in first_lines)
