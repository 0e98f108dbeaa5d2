"""Default SoftmaxMLPClassifier() against default MLPClassifier(), as a new user tries them.

Each estimator sits behind StandardScaler in a pipeline, every parameter left at
its default except ``random_state=0``; 5-fold cross-validation (stratified, as
``cross_val_score`` does for classifiers) on scikit-learn's bundled
classification data sets and on seeded synthetic problems.  Prints a markdown
table of mean accuracy and total fit time (the five fits) per data set, and
writes it as JSON with ``--json PATH``.  One BLAS thread, so both use one core.

    python bench/defaults.py [--json bench/defaults.json] [--repeat 1]

fastsoftmax's kernels are compiled before any timing (a fit on a small problem).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fastsoftmax import SoftmaxMLPClassifier


def problems() -> dict:
    """name -> (X, y): the bundled classification sets, then seeded synthetic ones."""
    out = {}
    for name in ("iris", "wine", "breast_cancer", "digits"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        out[name] = (X, y)
    out["classification_5"] = datasets.make_classification(
        n_samples=2000, n_features=20, n_informative=10, n_classes=5, random_state=0)
    out["classification_2"] = datasets.make_classification(
        n_samples=1000, n_features=30, n_informative=5, n_redundant=5, flip_y=0.05,
        random_state=1)
    out["moons"] = datasets.make_moons(n_samples=1000, noise=0.3, random_state=0)
    out["circles"] = datasets.make_circles(n_samples=1000, noise=0.1, factor=0.5,
                                           random_state=0)
    out["blobs_8"] = datasets.make_blobs(n_samples=1500, centers=8, n_features=10,
                                         cluster_std=3.0, random_state=0)
    X, y = datasets.make_gaussian_quantiles(n_samples=1000, n_features=4, n_classes=3,
                                            random_state=0)
    out["gaussian_quantiles"] = (X, y)
    return out


def cross_validate(make, X, y) -> tuple[float, float]:
    """(mean accuracy over 5 folds, total seconds of the 5 fits)."""
    scores, seconds = [], 0.0
    for train, test in StratifiedKFold(5).split(X, y):
        model = make_pipeline(StandardScaler(), make())
        t0 = time.perf_counter()
        model.fit(X[train], y[train])
        seconds += time.perf_counter() - t0
        scores.append(model.score(X[test], y[test]))
    return float(np.mean(scores)), seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    ours = lambda: SoftmaxMLPClassifier(random_state=0)  # noqa: E731
    theirs = lambda: MLPClassifier(random_state=0)  # noqa: E731
    X, y = datasets.make_classification(n_samples=300, n_features=5, n_informative=3,
                                        n_classes=3, random_state=0)
    rows = []
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted below instead
        make_pipeline(StandardScaler(), ours()).fit(X, y)  # compile outside the timing
        for name, (X, y) in problems().items():
            X = np.asarray(X, np.float64)
            a_ours, t_ours = cross_validate(ours, X, y)
            a_theirs, t_theirs = cross_validate(theirs, X, y)
            rows.append(dict(data=name, n_samples=len(y), n_features=X.shape[1],
                             n_classes=len(np.unique(y)), ours=a_ours, mlp=a_theirs,
                             ours_seconds=t_ours, mlp_seconds=t_theirs))
    print("| data | samples x features, classes | SoftmaxMLPClassifier() | MLPClassifier() "
          "| difference (points) | fit s (ours / MLP) | MLP / ours |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        diff = 100 * (r["ours"] - r["mlp"])
        print(f"| {r['data']} | {r['n_samples']} x {r['n_features']}, {r['n_classes']} "
              f"| {r['ours']:.3f} | {r['mlp']:.3f} | {diff:+.1f}{'' if diff >= -1 else ' !'} "
              f"| {r['ours_seconds']:.2f} / {r['mlp_seconds']:.2f} "
              f"| {r['mlp_seconds'] / r['ours_seconds']:.1f}x |")
    t_ours = sum(r["ours_seconds"] for r in rows)
    t_mlp = sum(r["mlp_seconds"] for r in rows)
    worst = min(100 * (r["ours"] - r["mlp"]) for r in rows)
    print(f"\nall fits: {t_ours:.2f} s against {t_mlp:.2f} s ({t_mlp / t_ours:.1f}x); "
          f"worst difference {worst:+.1f} points (target: no worse than -1.0, at least 3x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, ours_seconds=t_ours, mlp_seconds=t_mlp), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
