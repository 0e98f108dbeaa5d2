"""Grid search: grids, epoch sharing, determinism across workers, resume, CLI errors."""

import json
import os
from importlib.metadata import version as fs_version

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import cli, simd
from fastsoftmax.sweep import grid
from fastsoftmax.sweep import Record, run_sweep
from fastsoftmax.sweep.results import RESULTS_FORMAT

from helpers import RTOL, SMALL_ARGS, assert_params_close, make_data


@pytest.fixture(scope="module")
def small():
    X, y = make_data(400, seed=11, dtype=np.float32)
    Xv, yv = make_data(100, seed=12, dtype=np.float32)
    return X, y, Xv, yv


def test_default_grid_is_the_original_study():
    configs = grid.build_grid(**grid.DEFAULT)
    assert len(configs) == 72 == len(set(configs))
    assert len(grid.group_configs(configs)) == 24
    assert {c.epochs for c in configs} == {5, 10, 20}


def test_presets_are_valid_grids():
    for name, axes in grid.PRESETS.items():
        configs = grid.build_grid(**axes)
        assert configs, name
    adam = grid.build_grid(**grid.ADAM)
    assert {c.optimizer for c in adam} == {"adam"} and len(grid.group_configs(adam)) == 2
    assert {c.optimizer for c in grid.build_grid(**grid.DEFAULT)} == {"sgd"}


def test_sample_is_distinct_seeded_and_bounded():
    configs = grid.build_grid(**grid.DEFAULT)
    a = grid.sample_grid(configs, 12, seed=3)
    assert len(set(a)) == 12 and set(a) <= set(configs)
    assert a == grid.sample_grid(configs, 12, seed=3)
    assert a != grid.sample_grid(configs, 12, seed=4)
    with pytest.raises(ValueError, match="larger than the grid"):
        grid.sample_grid(configs, 73, seed=0)


@pytest.mark.parametrize("axes, match", [
    (dict(batch_size=[0]), "batch size"),
    (dict(learning_rate=[-0.1]), "learning rate"),
    (dict(alpha=[-1.0]), "alpha"),
    (dict(hidden_size=[]), "hidden_size: needs at least one value"),
])
def test_bad_axes(axes, match):
    with pytest.raises(ValueError, match=match):
        grid.build_grid(**{**grid.DEFAULT, **axes})


def test_packs_share_a_key_respect_the_size_and_balance():
    keys = ["a"] * 8 + ["b"] * 3
    costs = [5, 5, 5, 5, 3, 3, 3, 3, 1, 1, 1]
    packs = grid.pack_groups(keys, costs, 4)
    assert sorted(j for p in packs for j in p) == list(range(11))
    assert all(len({keys[j] for j in p}) == 1 and len(p) <= 4 for p in packs)
    assert len(packs) == 3  # as few as the size allows
    a_loads = sorted(sum(costs[j] for j in p) for p in packs if keys[p[0]] == "a")
    assert a_loads == [16, 16]  # two 5s and two 3s each, not four 5s and four 3s
    assert grid.pack_groups(keys, costs, 1) == [[j] for j in range(11)]
    # a size budget splits packs further; a job over the budget packs alone
    sizes = [40, 40, 40, 40, 10, 10, 10, 10, 200, 1, 1]
    packs = grid.pack_groups(keys, costs, 4, sizes, 100)
    assert sorted(j for p in packs for j in p) == list(range(11))
    for p in packs:
        assert len(p) == 1 or sum(sizes[j] for j in p) <= 100
    assert [8] in packs
    with pytest.raises(ValueError, match="pack size"):
        grid.pack_groups(keys, costs, 0)


def test_assignment_balances_costliest_first():
    plan = grid.assign_workers([8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1], 2)
    loads = sorted(sum([8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1][j] for j in jobs) for jobs in plan)
    assert loads == [11, 11]
    assert sorted(j for jobs in plan for j in jobs) == list(range(11))


def _same(out_a, out_b):
    by_config = {r.config: r for r in out_b.records}
    for r in out_a.records:
        s = by_config[r.config]
        assert r.history == s.history and r.diverged == s.diverged, r.config
        assert (r.train_loss, r.val_accuracy) == (s.train_loss, s.val_accuracy)
        if not r.diverged:
            for p, q in zip(out_a.params[r.config], out_b.params[r.config]):
                np.testing.assert_array_equal(p, q)


_PLAN_ONLY = """
import numpy as np
from numba.core import event
from fastsoftmax.sweep import grid
from fastsoftmax.sweep import make_plan

compiled = []


class Compiles(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Compiles())
X = np.random.default_rng(0).integers(0, 256, (40, 784), dtype=np.uint8)
configs = grid.build_grid(batch_size=[16, 32], learning_rate=[0.1], epochs=[1, 2],
                          alpha=[1e-4], hidden_size=[8, 20], optimizer=["sgd"])
plan = make_plan(configs, X, X)
print(len(plan.packs), compiled)
"""


def test_building_a_plan_compiles_nothing(tmp_path):
    """make_plan runs before the sweep's two processes start compiling: a call of a
    jitted function from it would start numba's CPU target and compile, about a
    second by which a first run's second process would start later.  Counted by
    numba's compile events in a fresh process with an empty cache."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _PLAN_ONLY], env=env, check=True,
                         timeout=300, capture_output=True, text=True).stdout.split(maxsplit=1)
    assert int(out[0]) > 0 and out[1].strip() == "[]", out


def test_a_plans_rows_are_named_views_and_a_packs_plan_its_slice(small):
    from fastsoftmax.sweep import plan as planmod

    X, y, Xv, yv = small
    configs = grid.build_grid(batch_size=[16, 32], learning_rate=[0.1, 0.05], epochs=[1, 2],
                              alpha=[1e-4], hidden_size=[6, 9], optimizer=["sgd", "adam"])
    plan = planmod.make_plan(configs, X, Xv, pack_size=2)
    heads = {gi: c for gi, c in plan.flat_configs}  # each group's largest epoch count
    G = len(heads)
    assert plan.g_int.shape == (len(planmod.G_INT), G) and plan.c_int.shape[0] == 3
    assert list(plan.g_batch) == [heads[g].batch_size for g in range(G)]
    assert list(plan.g_hidden) == [heads[g].hidden_size for g in range(G)]
    assert np.allclose(plan.g_lr, [heads[g].learning_rate for g in range(G)])
    assert np.shares_memory(plan.g_lr, plan.g_rate)  # a view: one source for the kernels
    assert list(plan.c_epochs) == [c.epochs for _, c in plan.flat_configs]
    p = max(range(len(plan.packs)), key=lambda i: len(plan.packs[i]))
    members = plan.packs[p]
    part = plan.pack_plan(p)
    assert len(members) == 2 and part.packs == [[0, 1]]
    np.testing.assert_array_equal(part.g_rate, plan.g_rate[:, members])
    np.testing.assert_array_equal(part.g_batch, plan.g_batch[members])
    for i, g in enumerate(members):  # each model's starting weights, packed anew
        np.testing.assert_array_equal(
            part.weights[part.g_off[i]:part.g_off[i] + part.g_size[i]],
            plan.weights[plan.g_off[g]:plan.g_off[g] + plan.g_size[g]])
    assert sorted(c for _, c in part.flat_configs) == \
        sorted(c for gi, c in plan.flat_configs if gi in members)


def test_epoch_sharing_equals_separate_training(small):
    configs = grid.build_grid(batch_size=[16, 50], learning_rate=[0.1], epochs=[1, 3, 4],
                              alpha=[1e-3], hidden_size=[6])
    shared = run_sweep(configs, *small, workers=2)
    assert len(shared.records) == 6
    for c in configs:
        alone = run_sweep([c], *small, workers=1)
        _same(alone, shared)


def test_bit_identical_across_worker_counts_and_packs(small):
    configs = grid.build_grid(batch_size=[8, 32, 64], learning_rate=[0.05, 0.2], epochs=[2, 3],
                              alpha=[0.0, 1e-2], hidden_size=[3, 10])
    one = run_sweep(configs, *small, workers=1)
    two = run_sweep(configs, *small, workers=2)
    assert len(one.records) == len(configs)
    _same(one, two)
    _same(two, one)
    for pack_size in (1, 3, 8):  # alone, uneven packs, a whole batch size at once
        _same(one, run_sweep(configs, *small, workers=2, pack_size=pack_size))


def test_optimizer_axis_packs_and_workers_are_bit_identical(small):
    """Every rule in one grid: packs mix them (they share batch size and
    epochs), and the results do not depend on the packing or the workers."""
    configs = grid.build_grid(batch_size=[16, 40], learning_rate=[0.01, 0.05], epochs=[1, 3],
                              alpha=[1e-3], hidden_size=[5, 12],
                              optimizer=["sgd", "momentum", "nesterov", "adam"])
    assert len(configs) == 64 and {c.optimizer for c in configs} == set(
        ["sgd", "momentum", "nesterov", "adam"])
    one = run_sweep(configs, *small, workers=1, pack_size=1)
    _same(one, run_sweep(configs, *small, workers=2))
    _same(one, run_sweep(configs, *small, workers=2, pack_size=8))
    by_rule = {c.optimizer: one.params[c].W1 for c in configs
               if c.batch_size == 16 and c.learning_rate == 0.01 and c.epochs == 3
               and c.hidden_size == 5}
    assert len({w.tobytes() for w in by_rule.values()}) == 4  # each rule trained its own way


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam"])
def test_sweep_optimizer_agrees_with_train(small, optimizer):
    X, y, Xv, yv = small
    c = grid.Config(batch_size=20, learning_rate=0.01, epochs=2, alpha=1e-3, hidden_size=7,
                    optimizer=optimizer)
    out = run_sweep([c], X, y, Xv, yv, workers=1, seed=5)
    ref = fs.train(X, y, hidden_size=7, batch_size=20, learning_rate=0.01, epochs=2,
                   alpha=1e-3, seed=5, X_val=Xv, y_val=yv, optimizer=optimizer)
    for p, q in zip(out.params[c], ref.params):  # the same kernels: bit for bit
        np.testing.assert_array_equal(p, q)
    assert out.records[0].history["train_objective"] == ref.history.train_loss
    numpy = fs.train(X, y, hidden_size=7, batch_size=20, learning_rate=0.01, epochs=2,
                     alpha=1e-3, seed=5, optimizer=optimizer, backend="numpy")
    assert_params_close(out.params[c], numpy.params, np.float32)


def test_divergence_in_a_pack_leaves_the_others_as_if_alone(small):
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.1, 1e3], epochs=[1, 3],
                              alpha=[1.0, 1e-3], hidden_size=[4, 9])
    packed = run_sweep(configs, *small, workers=1, pack_size=8)
    alone = run_sweep(configs, *small, workers=1, pack_size=1)
    assert {r.config.learning_rate for r in packed.records if r.diverged} == {1e3}
    _same(packed, alone)


def test_uint8_pixels_equal_scaled_floats():
    rng = np.random.default_rng(3)
    X8 = rng.integers(0, 256, (300, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 300)
    configs = grid.build_grid(batch_size=[32], learning_rate=[0.1], epochs=[1, 2],
                              alpha=[1e-3], hidden_size=[5])
    pixels = run_sweep(configs, X8[:200], y[:200], X8[200:], y[200:], workers=2)
    Xf = X8.astype(np.float32) / np.float32(255)
    floats = run_sweep(configs, Xf[:200], y[:200], Xf[200:], y[200:], workers=2)
    _same(pixels, floats)
    with pytest.raises(ValueError, match="X_val has dtype"):
        run_sweep(configs, X8[:200], y[:200], Xf[200:], y[200:])


def test_sweep_agrees_with_train(small):
    X, y, Xv, yv = small
    c = grid.Config(batch_size=20, learning_rate=0.1, epochs=3, alpha=1e-3, hidden_size=7)
    out = run_sweep([c], X, y, Xv, yv, workers=1, seed=5)
    ref = fs.train(X, y, hidden_size=7, batch_size=20, learning_rate=0.1, epochs=3, alpha=1e-3,
                   seed=5, X_val=Xv, y_val=yv)
    assert_params_close(out.params[c], ref.params, np.float32)
    np.testing.assert_allclose(out.records[0].history["val_accuracy"], ref.history.val_accuracy)
    # fs.train's train_loss is the objective; the sweep's is the cross-entropy alone
    np.testing.assert_allclose(out.records[0].history["train_objective"],
                               ref.history.train_loss, rtol=RTOL[np.dtype(np.float32)])
    np.testing.assert_allclose(out.records[0].history["train_loss"],
                               _reference_train_cross_entropy(X, y, c, seed=5),
                               rtol=RTOL[np.dtype(np.float32)])
    rec = out.records[0]
    assert rec.train_loss == rec.history["train_loss"][-1]
    assert rec.train_objective == rec.history["train_objective"][-1] > rec.train_loss


def _reference_train_cross_entropy(X, y, c, seed):
    """Per epoch, the size-weighted mean cross-entropy (no L2) of the minibatches
    at the weights each was computed with: the reference's own loop, spelled out."""
    params = fs.init_params(X.shape[1], c.hidden_size, 10, seed=seed, dtype=X.dtype)
    out = []
    for order in fs.minibatch_orders(len(X), c.epochs, seed):
        total = 0.0
        for start in range(0, len(order), c.batch_size):
            idx = order[start:start + c.batch_size]
            total += fs.reference.cross_entropy(fs.reference.forward(params, X[idx]).Z,
                                                y[idx]) * len(idx)
            _, params = fs.reference.sgd_step(params, X[idx], y[idx], c.learning_rate, c.alpha)
        out.append(total / len(order))
    return out


def test_a_record_reads_back_from_results_jsonl_as_it_was(small):
    """What a run prints as it trains and what a rerun prints from results.jsonl
    come from these two: a seconds value of 4.52496 printed 4.52 while the file
    held 4.525, which prints 4.53."""
    configs = grid.build_grid(batch_size=[16, 50], learning_rate=[0.1], epochs=[1, 3],
                              alpha=[1e-3], hidden_size=[6])
    for r in run_sweep(configs, *small, workers=2).records:
        again = Record.from_dict(json.loads(json.dumps(r.as_dict())))
        assert again == r
        assert f"{again.seconds:.2f}" == f"{r.seconds:.2f}"
    assert Record(configs[0], 0.5, 0.5, 0.5, 4.52496, False).seconds == 4.525


@pytest.mark.parametrize("alpha", [1.0, 1e-4])  # overflow, and the default alpha's runaway loss
def test_divergence_is_recorded_and_the_sweep_goes_on(small, alpha):
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.1, 1e3], epochs=[2],
                              alpha=[alpha], hidden_size=[4])
    out = run_sweep(configs, *small, workers=2)
    by_lr = {r.config.learning_rate: r for r in out.records}
    assert by_lr[1e3].diverged and np.isnan(by_lr[1e3].val_accuracy)
    assert not by_lr[0.1].diverged and np.isfinite(by_lr[0.1].val_accuracy)
    assert by_lr[1e3].config not in out.params
    # the same rule as fs.train
    X, y, Xv, yv = small
    for lr, rec in by_lr.items():
        alone = fs.train(X, y, hidden_size=4, batch_size=16, learning_rate=lr, alpha=alpha,
                         epochs=2, X_val=Xv, y_val=yv)
        assert alone.diverged == rec.diverged
        assert len(alone.history) == len(rec.history["train_loss"])


def test_interrupt_stops_and_keeps_finished(small):
    # 3000 epochs would take seconds; the stop must come after about one.
    configs = grid.build_grid(batch_size=[8], learning_rate=[0.01], epochs=[1, 3000],
                              alpha=[0.0], hidden_size=[40])
    seen = []

    def interrupt(done, total):
        seen.append(done)
        if done >= 1:  # the 1-epoch configuration is finished: press Ctrl-C
            raise KeyboardInterrupt

    out = run_sweep(configs, *small, workers=1, on_progress=interrupt, poll_seconds=0.01)
    assert out.interrupted
    assert [r.config.epochs for r in out.records] == [1]


# --------------------------------------------------------------------------
# the command line, on small .npy data the tests write


SMALL_GRID = [*SMALL_ARGS, "--quiet"]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_runs_and_writes_results(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)
    assert code == 0, err
    assert "best:" in out and "test: loss" in out and "per class:" in out
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    rec = json.loads(lines[0])
    assert len(rec["history"]["val_accuracy"]) == rec["epochs"]
    assert (out_dir / "results.csv").read_text().count("\n") == 5
    best = json.loads((out_dir / "best.json").read_text())
    params = fs.load_params(out_dir / "best_params.npz")
    ds = fs.load_fashion_mnist(data_dir)
    loss, acc = fs.evaluate(params, ds.test_images, ds.test_labels)
    assert acc == best["test_accuracy"] > 0.5
    assert len(best["test_per_class_accuracy"]) == 10
    # the losses are named for what they are, in the CSV and under the printed table
    header = (out_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert header[5:9] == ["optimizer", "train_cross_entropy", "val_cross_entropy",
                           "train_objective"]
    assert "train_ce" in out and "objective" in out and "no L2 term" in out
    assert best["best"]["train_objective"] > best["best"]["train_loss"]
    # the run's wall time and machine; a rerun that trains nothing keeps them
    assert best["wall_seconds"] > 0 and best["resumed_configs"] == 0
    assert best["machine"]["cpu"] and best["machine"]["numba"] == fs_version("numba")
    assert best["machine"]["kernels_width"] == simd.WIDTH
    assert run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)[0] == 0
    assert json.loads((out_dir / "best.json").read_text()) == best


def test_cli_optimizers_axis(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_ARGS,
                             "--optimizers", "adam,sgd")
    assert code == 0, err
    records = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    assert sorted({r["optimizer"] for r in records}) == ["adam", "sgd"] and len(records) == 8
    rows = (out_dir / "results.csv").read_text().splitlines()
    assert rows[0].split(",")[5] == "optimizer"
    assert sorted({row.split(",")[5] for row in rows[1:]}) == ["adam", "sgd"]
    assert " adam " in out and "optimizer=" in out


def test_a_sweep_from_before_the_optimizer_axis_resumes_as_sgd(tmp_path, data_dir, capsys):
    """Folders written before the axis have no optimizer in sweep.json or the
    records: they were plain SGD, and resume as such without training again."""
    out_dir = tmp_path / "out"
    assert run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)[0] == 0
    meta = json.loads((out_dir / "sweep.json").read_text())
    for c in meta["configs"]:
        del c["optimizer"]
    (out_dir / "sweep.json").write_text(json.dumps(meta))
    lines = []
    for line in (out_dir / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        del rec["optimizer"]
        lines.append(json.dumps(rec))
    (out_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    best = json.loads((out_dir / "best.json").read_text())
    del best["best"]["optimizer"]
    (out_dir / "best.json").write_text(json.dumps(best))
    before = (out_dir / "best_params.npz").read_bytes()
    code, out, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_ARGS)
    assert code == 0, err
    assert "4 of 4 configurations already done" in err
    assert "training the best configuration again" not in err  # the saved model was its
    assert (out_dir / "best_params.npz").read_bytes() == before
    assert json.loads((out_dir / "best.json").read_text())["best"]["optimizer"] == "sgd"


@pytest.mark.parametrize("fmt, says", [
    (None, "earlier fastsoftmax (format 1, where train_loss included the L2"),  # before it
    (99, f"newer fastsoftmax (format 99; this one reads format {RESULTS_FORMAT}: upgrade it"),
])
def test_results_of_another_format_are_refused(tmp_path, data_dir, capsys, fmt, says):
    out_dir = tmp_path / "out"
    assert run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)[0] == 0
    meta = json.loads((out_dir / "sweep.json").read_text())
    del meta["format"]  # as written before train_loss lost its L2 term
    if fmt is not None:
        meta["format"] = fmt
    (out_dir / "sweep.json").write_text(json.dumps(meta))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out_dir.iterdir())
    code, _, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)
    assert code == 2 and says in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out_dir.iterdir()) == before


def test_cli_json_summary(data_dir, capsys):
    code, out, _ = run_cli(capsys, "--data", data_dir, "--json", *SMALL_GRID)
    assert code == 0
    summary = json.loads(out)
    assert summary["n_configs"] == 4 and summary["n_train"] == 400 and summary["n_val"] == 100
    assert 0 <= summary["test_accuracy"] <= 1


def test_resume_after_interruption_with_torn_line(tmp_path, data_dir, capsys):
    full = tmp_path / "full"
    assert run_cli(capsys, "--data", data_dir, "--out", full, *SMALL_GRID)[0] == 0
    part = tmp_path / "part"
    part.mkdir()
    (part / "sweep.json").write_text((full / "sweep.json").read_text())
    lines = (full / "results.jsonl").read_text().splitlines()
    # two records survived, the third was torn mid-write by a crash
    (part / "results.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    code, _, err = run_cli(capsys, "--data", data_dir, "--out", part, *SMALL_GRID[:-1])
    assert code == 0, err
    assert "torn" in err and "resuming" in err
    def strip(path):
        recs = [json.loads(l) for l in path.read_text().splitlines()]
        return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in recs)
    assert strip(part / "results.jsonl") == strip(full / "results.jsonl")
    a = json.loads((full / "best.json").read_text())
    b = json.loads((part / "best.json").read_text())
    assert a["test_accuracy"] == b["test_accuracy"] and a["test_loss"] == b["test_loss"]
    for p, q in zip(fs.load_params(full / "best_params.npz"), fs.load_params(part / "best_params.npz")):
        np.testing.assert_array_equal(p, q)


def test_resume_refuses_a_different_grid(tmp_path, data_dir, capsys):
    out_dir = tmp_path / "out"
    assert run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID)[0] == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out_dir.iterdir())
    code, _, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, *SMALL_GRID,
                           "--seed", "1")
    assert code == 2 and "refusing to mix" in err and len(err.strip().splitlines()) == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out_dir.iterdir()) == before


@pytest.mark.parametrize("argv, match", [
    (["--bogus"], "unrecognized arguments"),
    (["--batch-sizes", ""], "--batch-sizes: expected a comma-separated list"),
    (["--batch-sizes", "16,,32"], "comma-separated list"),
    (["--learning-rates", "fast"], "--learning-rates: 'fast' is not a list of numbers"),
    (["--batch-sizes", "0,16"], "batch size must be >= 1"),
    (["--learning-rates", "0"], "learning rate must be > 0"),
    (["--learning-rates", "-0.1"], "learning rate must be > 0"),
    (["--alphas", "-1"], "alpha must be >= 0"),
    (["--optimizers", "sgd,rmsprop"], "optimizer must be one of"),
    (["--optimizers", "sgd,"], "--optimizers: expected a comma-separated list"),
    (["--sample", "73"], "larger than the grid"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--out", "/proc/version"], "not a directory"),
    (["--out", "/proc/fastsoftmax-out"], "not writable"),
])
def test_cli_errors_are_one_line_exit_2(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1
    assert out == "" and list(tmp_path.iterdir()) == []


def test_cli_missing_data_exit_1(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--data", tmp_path, "--quiet")
    assert code == 1 and "does not hold the four Fashion-MNIST files" in err


def _nearest_mean_accuracy(X, y, Xt, yt):
    """Test accuracy of the nearest class mean: a floor any trained network should clear."""
    X, Xt = X.astype(np.float64) / 255, Xt.astype(np.float64) / 255
    means = np.stack([X[y == k].mean(axis=0) for k in range(10)])  # (10, 784)
    d = (Xt ** 2).sum(1)[:, None] - 2 * Xt @ means.T + (means ** 2).sum(1)[None, :]
    return float((d.argmin(axis=1) == yt).mean())


@pytest.mark.realdata
def test_sampled_default_sweep_picks_a_model_that_generalises(real_data, tmp_path, capsys):
    # A sample of the default grid, 5 epochs each to stay quick.
    code, out, err = run_cli(capsys, "--sample", "8", "--seed", "0", "--epochs", "5", "--json",
                             "--quiet", "--out", tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["n_train"] == 48000 and summary["n_val"] == 12000
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8
    best = summary["best"]
    # the chosen one is the table's best on validation...
    assert best["val_accuracy"] == max(r["val_accuracy"] or -1 for r in records)
    # ...its test accuracy is its validation accuracy within 3 points (12,000 and 10,000
    # held-out images: more than 7 standard errors)...
    assert abs(summary["test_accuracy"] - best["val_accuracy"]) <= 0.03, summary
    # ...and it beats the nearest class mean, computed here from the same training split.
    tr, _ = fs.data.train_val_split(60000, 0.2, 0)
    floor = _nearest_mean_accuracy(real_data.train_images[tr], real_data.train_labels[tr],
                                   real_data.test_images, real_data.test_labels)
    assert summary["test_accuracy"] > floor, (summary["test_accuracy"], floor)


def test_float64_sweep_agrees_with_float32(tmp_path, data_dir, capsys):
    runs = {}
    for dtype in ("float32", "float64"):
        out_dir = tmp_path / dtype
        code, out, err = run_cli(capsys, "--data", data_dir, "--out", out_dir, "--json",
                                 "--dtype", dtype, *SMALL_GRID)
        assert code == 0, err
        recs = {tuple(r[k] for k in grid.AXES): r
                for r in map(json.loads, (out_dir / "results.jsonl").read_text().splitlines())}
        runs[dtype] = json.loads(out), recs, fs.load_params(out_dir / "best_params.npz")
    (s32, r32, p32), (s64, r64, p64) = runs["float32"], runs["float64"]
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    assert {k: s32["best"][k] for k in grid.AXES} == {k: s64["best"][k] for k in grid.AXES}
    assert r32.keys() == r64.keys()
    for key in r32:
        for name in ("train_loss", "val_loss"):
            np.testing.assert_allclose(r32[key]["history"][name], r64[key]["history"][name],
                                       rtol=1e-3, err_msg=f"{key} {name}")
    np.testing.assert_allclose(s32["test_loss"], s64["test_loss"], rtol=1e-3)
    assert abs(s32["test_accuracy"] - s64["test_accuracy"]) <= 0.002


def test_a_folder_in_use_by_a_running_sweep_is_refused(tmp_path, data_dir, capsys):
    """Two sweeps on one --out would each append every record (#35): while one runs, the
    folder is locked, and another sweep on it, in any process, stops at once with exit 2,
    writing nothing.  The lock goes with the sweep: then the folder resumes as ever."""
    import subprocess
    import sys

    from fastsoftmax.sweep.results import ResultsFolder

    out = tmp_path / "out"
    argv = ["--data", str(data_dir), "--out", str(out), *map(str, SMALL_GRID)]
    assert cli.main(argv) == 0
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    running = ResultsFolder(out)  # as a sweep running on it holds it
    running.open(json.loads((out / "sweep.json").read_text()))
    try:
        other = subprocess.run([sys.executable, "-m", "fastsoftmax.sweep", *argv],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 2, other.stderr
        assert "in use by another sweep running now" in other.stderr
        assert other.stderr.count("\n") == 1 and "Traceback" not in other.stderr
        capsys.readouterr()
        assert cli.main(argv) == 2  # this process too: a second open of the folder
        assert "in use by another sweep" in capsys.readouterr().err
    finally:
        running.release()
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert cli.main(argv) == 0  # released: a rerun of the finished folder


def test_a_full_disk_or_memory_is_one_line_and_keeps_what_finished(tmp_path, data_dir,
                                                                     capsys, monkeypatch):
    """#35: the machine failing the sweep (ENOSPC, a MemoryError) is one line naming the
    file and the errno's words, what is kept, exit 1; a rerun resumes from there."""
    import errno

    from fastsoftmax.sweep.results import ResultsFolder

    out = tmp_path / "out"
    argv = ["--data", data_dir, "--out", out, *SMALL_GRID]
    real = ResultsFolder.append

    def append(self, rec):
        if (self.path / "results.jsonl").stat().st_size:  # the second record: disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          str(self.path / "results.jsonl"))
        real(self, rec)

    monkeypatch.setattr(ResultsFolder, "append", append)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"fastsoftmax.sweep: {out / 'results.jsonl'}: No space left on device; the results of "
        f"1 configuration are kept in {out}; run the same command again to resume")
    monkeypatch.setattr(ResultsFolder, "append", real)
    monkeypatch.setattr(cli, "run_sweep", lambda *a, **k: (_ for _ in ()).throw(MemoryError))
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        "fastsoftmax.sweep: out of memory; the results of 1 configuration are kept")
    monkeypatch.undo()
    assert run_cli(capsys, *argv)[0] == 0  # resumed: the three missing, each once
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 == len({tuple(json.loads(x)[k] for k in grid.AXES) for x in lines})
