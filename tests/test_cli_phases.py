"""Ctrl-C in every phase of ``python -m fastsoftmax.sweep``, and reruns of a results folder.

Each test runs the command in a subprocess and sends it a real SIGINT: at a
line the command prints on entering a phase (compiling, training, training the
best model again), or, for phases too short to catch from outside (loading,
writing), from inside the process as it enters them.  Every wait is bounded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import SMALL_ARGS

# One group trained for 1 and for LONG epochs: long enough to be interrupted
# (a few seconds), short enough to finish on a rerun.
LONG = 300
SLOW_ARGS = ["--batch-sizes", "16", "--learning-rates", "0.01", "--epochs", f"1,{LONG}",
             "--alphas", "1e-3", "--hidden-sizes", "40", "--limit", "5000"]
WAIT = 120  # seconds any one step may take, compile included


def _command(args, driver=None):
    if driver is None:
        return [sys.executable, "-m", "fastsoftmax.sweep", *map(str, args)]
    return [sys.executable, "-c", driver, *map(str, args)]


def run(args, env=None, driver=None):
    return subprocess.run(_command(args, driver), capture_output=True, text=True, timeout=WAIT,
                          env=env)


def interrupt_at(marker, args, env=None, ready=None, sig=signal.SIGINT):
    """Start the sweep, send ``sig`` once stderr shows ``marker`` (and ``ready()``
    holds); return (exit code, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen(_command(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    seen = []
    try:
        deadline = time.monotonic() + WAIT
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                break
        else:
            pytest.fail(f"the sweep ended without printing {marker!r}: {''.join(seen)}")
        while ready is not None and not ready():
            assert time.monotonic() < deadline and proc.poll() is None, "never got ready"
            time.sleep(0.05)
        proc.send_signal(sig)
        sent = time.monotonic()
        rest = proc.stderr.read()
        code = proc.wait(timeout=WAIT)
        return code, "".join(seen) + rest, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# Runs the command line after wrapping one function (INTERRUPT_IN, "module:name") so
# that the process sends itself SIGINT as it enters it.
SELF_INTERRUPT = """
import importlib, os, signal, sys, time
import fastsoftmax.cli as cli
module, name = os.environ["INTERRUPT_IN"].split(":")
module = importlib.import_module(module)
sig = getattr(signal, os.environ.get("INTERRUPT_WITH", "SIGINT"))
real = getattr(module, name)
def wrapped(*args, **kwargs):
    os.kill(os.getpid(), sig)  # its handler runs before the next line
    time.sleep(0.3)  # (a margin: the signal lands here, inside the phase)
    return real(*args, **kwargs)
setattr(module, name, wrapped)
sys.exit(cli.main(sys.argv[1:]))
"""


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def configs(recs):
    return sorted(tuple(r[k] for k in ("batch_size", "learning_rate", "epochs", "alpha",
                                       "hidden_size")) for r in recs)


def assert_clean_interrupt(code, err):
    assert code == 130, err
    assert "Traceback" not in err, err
    assert "fastsoftmax.sweep: interrupted;" in err


def test_interrupt_while_compiling(tmp_path, data_dir):
    out = tmp_path / "out"
    cold = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "empty-cache"))  # a first run
    code, err, delay = interrupt_at("compiling the kernels",
                                    ["--data", data_dir, *SMALL_ARGS, "--out", out], env=cold)
    assert_clean_interrupt(code, err)
    assert "the results of 0 configurations are kept" in err and "resume" in err
    assert delay < 30, "Ctrl-C waited for the compile to end"
    assert (out / "sweep.json").is_file() and records(out) == []
    # the rerun (default cache) resumes and finishes
    done = run(["--data", data_dir, *SMALL_ARGS, "--out", out, "--quiet"])
    assert done.returncode == 0, done.stderr
    assert len(records(out)) == 4 and (out / "best.json").is_file()


def test_interrupt_while_loading_writes_nothing(tmp_path, data_dir):
    out = tmp_path / "out"
    env = dict(os.environ, INTERRUPT_IN="fastsoftmax.cli:load_fashion_mnist")
    done = run(["--data", data_dir, *SMALL_ARGS, "--out", out], env=env, driver=SELF_INTERRUPT)
    assert_clean_interrupt(done.returncode, done.stderr)
    assert f"nothing was written to {out}" in done.stderr
    assert not out.exists() and done.stdout == ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A slow grid interrupted while training, then resumed to the end: (out folder,
    its command-line arguments, the interrupted run's (code, stderr, delay), the
    resumed run)."""
    out = tmp_path_factory.mktemp("slow") / "out"
    args = ["--data", data_dir, *SLOW_ARGS, "--out", out]
    code, err, delay = interrupt_at(
        "training 2 configurations", args,
        ready=lambda: (out / "results.jsonl").exists() and records(out) != [])
    resumed = run(args)
    return out, args, (code, err, delay), resumed


def test_interrupt_while_training_keeps_what_finished(finished):
    out, _, (code, err, delay), _ = finished
    assert_clean_interrupt(code, err)
    assert "the results of 1 configuration are kept" in err, err
    assert delay < 30


def test_rerun_resumes_an_interrupted_sweep(finished):
    out, _, _, resumed = finished
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "1 of 2 configurations already done" in resumed.stderr
    recs = records(out)
    assert len(recs) == 2 and configs(recs) == sorted(set(configs(recs)))  # each once
    assert {r["epochs"] for r in recs} == {1, LONG}
    assert "best:" in resumed.stdout


def test_rerun_of_a_finished_folder_prints_the_same_without_training(finished):
    out, args, _, resumed = finished
    before = (out / "results.jsonl").read_bytes()
    again = run(args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == resumed.stdout
    assert "training" not in again.stderr and "compiling" not in again.stderr
    assert (out / "results.jsonl").read_bytes() == before


def test_interrupt_while_training_the_best_again(finished, tmp_path):
    out, args, _, resumed = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "best_params.npz").unlink()  # as if the run that trained it had been stopped
    args = [copy if a == out else a for a in args]
    code, err, _ = interrupt_at("training the best configuration again", args)
    assert_clean_interrupt(code, err)
    assert "the results of 2 configurations are kept" in err
    assert records(copy) == records(out) and not (copy / "best_params.npz").exists()
    again = run(args)
    assert again.returncode == 0, again.stderr
    assert "training the best configuration again" in again.stderr
    assert again.stdout == resumed.stdout  # bit-identical retraining: the same test result
    assert (copy / "best_params.npz").read_bytes() == (out / "best_params.npz").read_bytes()


def test_interrupt_while_writing_finishes_the_files(tmp_path, data_dir):
    out = tmp_path / "out"
    env = dict(os.environ, INTERRUPT_IN="fastsoftmax.sweep.results:save_params")
    args = ["--data", data_dir, *SMALL_ARGS, "--out", out]
    done = run(args, env=env, driver=SELF_INTERRUPT)
    assert_clean_interrupt(done.returncode, done.stderr)
    assert "the results of 4 configurations are kept" in done.stderr
    # the set of files is whole: no temporary files, and best.json names the saved model
    assert sorted(p.name for p in out.iterdir()) == [
        "best.json", "best_params.npz", "results.csv", "results.jsonl", "sweep.json"]
    again = run(args + ["--json"])
    assert again.returncode == 0 and "training" not in again.stderr
    summary = json.loads(again.stdout)
    assert summary == json.loads((out / "best.json").read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_process_started_with_the_signal_ignored_keeps_ignoring_it(tmp_path, data_dir, sig):
    # What a non-interactive shell does to SIGINT for its `cmd &` jobs, and what a
    # supervisor may do to SIGTERM: the sweep honours it.
    out = tmp_path / "out"
    proc = subprocess.Popen(_command(["--data", data_dir, *SMALL_ARGS, "--out", out, "--quiet"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_IGN))
    time.sleep(1)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr
    assert "best:" in stdout and len(records(out)) == 4


# SIGTERM (kill, docker stop, a batch scheduler's limit) stops as Ctrl-C does, with 143.


def test_sigterm_while_training_keeps_what_finished(tmp_path, data_dir):
    out = tmp_path / "out"
    args = ["--data", data_dir, *SLOW_ARGS, "--out", out]
    code, err, delay = interrupt_at(
        "training 2 configurations", args, sig=signal.SIGTERM,
        ready=lambda: (out / "results.jsonl").exists() and records(out) != [])
    assert code == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM);" in err
    assert "the results of 1 configuration are kept" in err and delay < 30
    assert len(records(out)) == 1 and not (out / "best.json").exists()


def test_sigterm_while_writing_finishes_the_files(tmp_path, data_dir):
    out = tmp_path / "out"
    env = dict(os.environ, INTERRUPT_IN="fastsoftmax.sweep.results:save_params",
               INTERRUPT_WITH="SIGTERM")
    done = run(["--data", data_dir, *SMALL_ARGS, "--out", out], env=env, driver=SELF_INTERRUPT)
    assert done.returncode == 143, done.stderr
    assert "terminated (SIGTERM); the results of 4 configurations are kept" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "best.json", "best_params.npz", "results.csv", "results.jsonl", "sweep.json"]


def test_sigterm_is_restored_after_main(data_dir, capsys):
    from fastsoftmax import cli
    assert cli.main(["--data", str(data_dir), *map(str, SMALL_ARGS), "--quiet"]) == 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
