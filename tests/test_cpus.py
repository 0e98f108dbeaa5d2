"""The CPUs a process may use: affinity, cgroup quotas, numba's pool, and their absence."""

import json
import os
import shutil
import subprocess
import sys

import numba
import pytest

from fastsoftmax.host import cpus

from helpers import SMALL_ARGS


def _fake_proc(tmp_path, cgroup_text):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_text)
    return proc


def test_cgroup_v2_quota_on_an_ancestor_counts(tmp_path):
    proc = _fake_proc(tmp_path, "0::/job/step\n")
    root = tmp_path / "cgroup"
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
    (root / "job" / "cpu.max").write_text("150000 100000\n")
    assert cpus.quota_cpus(proc, root) == 1.5
    limit = cpus.available_cpus(proc, root, pool=64)
    # 1.5 CPUs of time still run two threads at once: round up
    assert limit.count == min(2, cpus.affinity_count() or 2, os.cpu_count())


def test_cgroup_quota_below_one_cpu_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_count", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    proc = _fake_proc(tmp_path, "0::/\n")
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text("50000 100000\n")
    limit = cpus.available_cpus(proc, root, pool=8)
    assert limit == cpus.CPULimit(1, "the cgroup CPU quota (0.5 CPUs)")


def test_cgroup_v1_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_count", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    proc = _fake_proc(tmp_path, "5:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    d = tmp_path / "cgroup" / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("300000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    limit = cpus.available_cpus(proc, tmp_path / "cgroup", pool=8)
    assert limit == cpus.CPULimit(3, "the cgroup CPU quota (3 CPUs)")
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cpus.quota_cpus(proc, tmp_path / "cgroup") is None


def test_numba_pool_caps_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_count", lambda: 8)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    limit = cpus.available_cpus(tmp_path / "none", tmp_path / "none", pool=3)
    assert limit == cpus.CPULimit(3, "numba's thread pool (NUMBA_NUM_THREADS)")


def test_without_proc_sys_or_affinity_falls_back_to_cpu_count(tmp_path, monkeypatch):
    # As on macOS: no /proc, no cgroups, no sched_getaffinity.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpus.affinity_count() is None
    assert cpus.quota_cpus(tmp_path / "no-proc", tmp_path / "no-sys") is None
    limit = cpus.available_cpus(tmp_path / "no-proc", tmp_path / "no-sys", pool=6)
    assert limit == cpus.CPULimit(6, "os.cpu_count()")


def test_garbled_cgroup_files_mean_no_limit(tmp_path):
    proc = _fake_proc(tmp_path, "0::/\n")
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text("lots\n")
    assert cpus.quota_cpus(proc, root) is None


def test_this_process_matches_numba():
    limit = cpus.available_cpus()
    assert 1 <= limit.count <= numba.config.NUMBA_NUM_THREADS


# --------------------------------------------------------------------------
# the command line where the process may use one CPU of two


needs_taskset = pytest.mark.skipif(
    shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity")
    or len(os.sched_getaffinity(0)) < 2,
    reason="needs taskset (util-linux) and at least 2 CPUs to restrict the sweep to one")


def _run_on_cpu0(*args, timeout=300):
    cpu = sorted(os.sched_getaffinity(0))[0]
    return subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-m", "fastsoftmax.sweep",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout)


@needs_taskset
def test_sweep_under_taskset_one_cpu_runs_with_one_worker(data_dir):
    done = _run_on_cpu0("--data", data_dir, *SMALL_ARGS, "--json")
    assert done.returncode == 0, done.stderr
    assert "training 4 configurations on 1 worker" in done.stderr
    assert json.loads(done.stdout)["n_configs"] == 4


@needs_taskset
def test_too_many_workers_under_taskset_names_the_limit(data_dir):
    done = _run_on_cpu0("--data", data_dir, *SMALL_ARGS, "--workers", "2")
    assert done.returncode == 2
    assert done.stderr.strip() == ("fastsoftmax.sweep: error: --workers: this process may use "
                                   "1 CPU (limited by the CPU affinity mask (taskset, cpuset)), "
                                   "got 2")
    assert done.stdout == ""


@needs_taskset
def test_run_sweep_asked_for_more_workers_than_cpus_still_runs():
    code = ("import numpy as np; from fastsoftmax.sweep import grid; from fastsoftmax.sweep import "
            "run_sweep; rng = np.random.default_rng(0); X = rng.random((60, 784)).astype(np.float32); y = rng.integers(0, 10, 60); "
            "c = grid.build_grid(batch_size=[8], learning_rate=[0.1], epochs=[1], alpha=[0.0], "
            "hidden_size=[4, 8]); out = run_sweep(c, X[:40], y[:40], X[40:], y[40:], workers=2); "
            "print(len(out.records))")
    cpu = sorted(os.sched_getaffinity(0))[0]
    done = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_cpu_model_and_simd_flags_from_cpuinfo(tmp_path):
    from fastsoftmax.host.machine import cpu_model
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
                    "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert cpu_model(str(info)) == ("AMD EPYC 9R14", ("sse4_2", "avx", "avx2", "fma", "avx512f",
                                                      "avx512bw"))
    model, flags = cpu_model(str(tmp_path / "missing"))
    assert model and flags == ()
