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
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "clf.npz").is_file()
