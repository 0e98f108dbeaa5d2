"""The sweep on a Dask cluster (loopback): same results as on this machine, faults, Ctrl-C.

Clusters are started the ways a user starts them: ``--scheduler local:N``, and
``dask scheduler`` with ``dask worker`` processes.  Every wait is bounded.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastsoftmax import cli
from fastsoftmax.sweep import grid
from fastsoftmax.sweep import run_sweep

from helpers import SMALL_ARGS, make_data, same_estimators, same_results

distributed = pytest.importorskip(
    "distributed", reason="the cluster tests need dask.distributed: pip install "
                          "'.[dask]' (part of '.[test]')")
from fastsoftmax.sweep import cluster  # noqa: E402
from fastsoftmax.sweep.cluster import parse_scheduler  # noqa: E402

WAIT = 120  # seconds any one step may take, worker start-up and compile included
AXES = grid.AXES
GRID = ["--batch-sizes", "16,64", "--learning-rates", "0.05,0.1", "--epochs", "1,2",
        "--alphas", "1e-3", "--hidden-sizes", "5,9", "--limit", "600"]


@pytest.fixture(scope="module")
def small():
    X, y = make_data(600, seed=21, dtype=np.float32)
    Xv, yv = make_data(150, seed=22, dtype=np.float32)
    return X, y, Xv, yv


def same_sweeps(a, b):
    """Every record and model equal bit for bit (the timings aside)."""
    assert [r.config for r in a.records] == [r.config for r in b.records]
    for r, s in zip(a.records, b.records):
        assert (r.train_loss, r.train_objective, r.val_loss, r.val_accuracy, r.diverged) == \
            (s.train_loss, s.train_objective, s.val_loss, s.val_accuracy, s.diverged)
        assert r.history == s.history
    assert a.params.keys() == b.params.keys()
    for c in a.params:
        for x, y in zip(a.params[c], b.params[c]):
            assert np.array_equal(x, y)


def folder_records(out: Path) -> dict:
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keyed = {tuple(r[k] for k in AXES): {k: v for k, v in r.items() if k != "seconds"}
             for r in recs}
    assert len(keyed) == len(recs), "a configuration recorded twice"
    return keyed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_scheduler():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", "10.0.0.5:8786", "tcp://", ""):
        with pytest.raises(ValueError, match="--scheduler"):
            parse_scheduler(bad)


def test_local_cluster_equals_the_local_sweep_bit_for_bit(small):
    configs = grid.build_grid(batch_size=[16, 64], learning_rate=[0.05, 0.1, 1e3],
                              epochs=[1, 3], alpha=[1e-3], hidden_size=[5, 20])
    here = run_sweep(configs, *small, workers=2, seed=4)
    seen, phases = [], []
    # one worker process: the tests on the cluster started with Dask's commands have two
    there = run_sweep(configs, *small, scheduler="local:1", seed=4, on_record=seen.append,
                      on_phase=lambda name, w: phases.append((name, w)))
    same_sweeps(here, there)
    assert not there.interrupted and any(r.diverged for r in there.records)  # lr 1e3
    assert sorted(r.config for r in seen) == sorted(configs)  # each streamed once
    assert phases == [("connect", 0), ("train", 1)]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and two workers on 127.0.0.1, started with Dask's own commands."""
    dask = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")
    assert dask, "the dask command is missing though distributed imports"
    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []

    def start(name, *args):
        log = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([dask, *args], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
              "--no-dashboard")
        for i in range(2):
            start(f"worker{i}", "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                  "--no-dashboard", "--nworkers", "1")
        try:
            client = distributed.Client(address, timeout=WAIT)
            client.wait_for_workers(2, timeout=WAIT)
        except (OSError, TimeoutError):
            pytest.fail("the cluster did not start: " + "".join(
                f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(logs.iterdir())))
        yield address, client
        client.close()
    finally:
        for p in procs:
            with_children_killed(p)


def with_children_killed(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_cluster_started_with_dasks_commands_runs_the_sweep(tmp_path, data_dir, capsys,
                                                              dask_cluster):
    address, _ = dask_cluster
    argv = ["--data", data_dir, "--quiet", *GRID]
    assert cli.main([str(a) for a in (*argv, "--out", tmp_path / "here")]) == 0
    assert cli.main([str(a) for a in (*argv, "--out", tmp_path / "there",
                                      "--scheduler", address)]) == 0
    assert folder_records(tmp_path / "there") == folder_records(tmp_path / "here")
    assert (tmp_path / "there" / "best_params.npz").read_bytes() == \
        (tmp_path / "here" / "best_params.npz").read_bytes()
    best = json.loads((tmp_path / "there" / "best.json").read_text())
    assert best["scheduler"] == address


def test_resume_of_a_distributed_sweep(tmp_path, data_dir, capsys, dask_cluster):
    address, _ = dask_cluster
    argv = [str(a) for a in ("--data", data_dir, *GRID, "--scheduler", address)]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main([*argv, "--out", str(full), "--quiet"]) == 0
    part.mkdir()
    (part / "sweep.json").write_text((full / "sweep.json").read_text())
    lines = (full / "results.jsonl").read_text().splitlines()
    (part / "results.jsonl").write_text("\n".join(lines[:5]) + "\n")  # as an interrupt leaves it
    capsys.readouterr()
    assert cli.main([*argv, "--out", str(part)]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and f"5 of {len(lines)} configurations already done" in err
    assert f"training {len(lines) - 5} configurations" in err
    assert folder_records(part) == folder_records(full)


def test_a_worker_killed_mid_sweep_has_its_packs_rerun(dask_cluster):
    address, client = dask_cluster
    X, y = make_data(3000, seed=5, dtype=np.float32)
    Xv, yv = make_data(300, seed=6, dtype=np.float32)
    configs = grid.build_grid(batch_size=[16], learning_rate=[0.01, 0.02, 0.03, 0.05],
                              epochs=[10, 30], alpha=[1e-4, 1e-3], hidden_size=[64])
    killed = []

    def kill_a_busy_worker(rec):
        if killed:
            return
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                pids = client.run(os.getpid, workers=busy[:1])
                pid = pids[busy[0]]
                os.kill(pid, signal.SIGKILL)  # its pack was running: it must run again
                killed.append(pid)
                return
            time.sleep(0.05)

    # One group a task, so there is always a pack running to be lost.
    there = run_sweep(configs, X, y, Xv, yv, scheduler=address, seed=1,
                      on_record=kill_a_busy_worker, pack_size=1)
    assert killed
    here = run_sweep(configs, X, y, Xv, yv, workers=2, seed=1, pack_size=1)
    same_sweeps(here, there)  # every configuration recorded once, none lost
    # the killed worker is gone; the cluster goes on with the other one
    assert killed[0] not in client.run(os.getpid).values()


def test_a_search_on_the_cluster_equals_the_search_here(dask_cluster, monkeypatch):
    pytest.importorskip("sklearn", reason="the searches need scikit-learn "
                        "(fastsoftmax[sklearn], part of fastsoftmax[test])")
    from fastsoftmax import SoftmaxMLPClassifier, SoftmaxMLPGridSearchCV, search

    address, _ = dask_cluster
    X, y = make_data(200, n_features=12, n_classes=3, seed=8)
    grid = {"learning_rate": [0.01, 0.05], "epochs": [2, 4], "hidden_size": [4, 9]}
    estimator = SoftmaxMLPClassifier(random_state=0, tol=None)
    here = SoftmaxMLPGridSearchCV(grid, estimator=estimator, cv=2, n_jobs=2).fit(X, y)
    monkeypatch.setattr(search, "_train_pack", None)  # no pack may train in this process
    there = SoftmaxMLPGridSearchCV(grid, estimator=estimator, cv=2,
                                   scheduler=address).fit(X, y)
    same_results(there, here)
    same_estimators(there.best_estimator_, here.best_estimator_)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, data_dir, capsys, monkeypatch):
    # Dask retries a refused connection until the timeout: a short one keeps this quick.
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 0.5)
    port = free_port()  # nothing listens there
    out = tmp_path / "out"
    code = cli.main([str(a) for a in ("--data", data_dir, *SMALL_ARGS, "--out", out,
                                      "--scheduler", f"tcp://127.0.0.1:{port}")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "cannot reach the scheduler within 0.5 s" in err and "Traceback" not in err
    assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text()


def test_ctrl_c_cancels_the_cluster_and_exits_130(tmp_path, data_dir):
    out = tmp_path / "out"
    args = ["--data", str(data_dir), "--batch-sizes", "16", "--learning-rates", "0.01,0.02",
            "--epochs", "1,400", "--alphas", "1e-3", "--hidden-sizes", "40", "--limit", "5000",
            "--out", str(out), "--scheduler", "local:1"]
    proc = subprocess.Popen([sys.executable, "-m", "fastsoftmax.sweep", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "training" in line:
                break
        else:
            pytest.fail("the sweep never started training: " + "".join(seen))
        time.sleep(1.0)  # the packs are on the workers now
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        code = proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(seen) + rest
    assert code == 130, err
    assert "Traceback" not in err and "interrupted;" in err and "kept in" in err


def test_without_a_scheduler_nothing_of_dask_is_imported(tmp_path, data_dir):
    code = ("import sys; from fastsoftmax.cli import main; "
            "rc = main(sys.argv[1:]); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]; "
            "sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, "--data", str(data_dir), *SMALL_ARGS,
                          "--quiet"], capture_output=True, text=True, timeout=WAIT)
    assert run.returncode == 0, run.stderr


def test_without_dask_one_line_naming_the_extra(tmp_path, data_dir, capsys, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "dask", None)  # as if not installed: import fails
    monkeypatch.setitem(sys.modules, "distributed", None)
    code = cli.main([str(a) for a in ("--data", data_dir, *SMALL_ARGS, "--quiet",
                                      "--out", tmp_path / "out", "--scheduler", "local:2")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "fastsoftmax[dask]" in err


@pytest.mark.parametrize("argv, message", [
    (["--scheduler", "local:0"], "local:N needs"),
    (["--scheduler", "somehost:8786"], "tcp://HOST:PORT"),
    (["--scheduler", "local:2", "--workers", "1"], "dask worker --nthreads"),
])
def test_scheduler_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
