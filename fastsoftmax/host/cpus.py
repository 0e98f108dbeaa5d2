"""How many CPUs this process may use, and why: the default number of sweep workers.

``os.cpu_count()`` counts the machine's CPUs, not the ones a process may run
on.  A container with a cpuset, ``taskset``, a batch scheduler or a CI runner
narrows the CPU affinity mask (which is also how numba sizes its thread pool),
and a cgroup CPU quota (``cpu.max``) caps the CPU time, so either can make
the machine's count wrong.  Every read here is Linux-specific and degrades to
"no limit from this source" where the file or call is absent.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CPULimit:
    """count : CPUs this process may use (>= 1); source : where that limit comes from."""

    count: int
    source: str


def affinity_count() -> int | None:
    """CPUs in this process's affinity mask, or None where the OS has no such call."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return None


def _cgroups(proc: Path) -> dict[str, str]:
    """This process's cgroup path per hierarchy ("" for v2's unified one, else the
    comma-separated controllers of a v1 hierarchy), from /proc/self/cgroup."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths = {}
    for line in lines:
        controllers, _, path = line.partition(":")[2].partition(":")
        paths[controllers] = path.strip()
    return paths


def _with_ancestors(mount: Path, path: str) -> list[Path]:
    """The cgroup directory of ``path`` under ``mount`` and its ancestors up to the
    mount, innermost first: a quota set on any of them applies."""
    here = mount / path.lstrip("/")
    return [d for d in (here, *here.parents) if d == mount or mount in d.parents]


def _quota_v2(directory: Path) -> float | None:
    """CPUs allowed by ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" for none)."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()[:2]
        return _ratio(quota, period)
    except (OSError, ValueError):
        return None


def _quota_v1(directory: Path) -> float | None:
    """CPUs allowed by cgroup v1's cpu.cfs_quota_us / cpu.cfs_period_us (-1: none)."""
    try:
        return _ratio((directory / "cpu.cfs_quota_us").read_text(),
                      (directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    if quota.strip() == "max":
        return None
    q, p = int(quota), int(period)
    return q / p if q > 0 and p > 0 else None


def quota_cpus(proc: Path = PROC, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest cgroup CPU quota over this process's cgroups, in CPUs, or None."""
    quotas = []
    for controllers, path in _cgroups(proc).items():
        if controllers == "":  # v2, mounted at the root (or at root/unified in hybrid mode)
            for mount in (root, root / "unified"):
                quotas += [_quota_v2(d) for d in _with_ancestors(mount, path)]
        elif "cpu" in controllers.split(","):
            quotas += [_quota_v1(d) for d in _with_ancestors(root / controllers, path)]
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def available_cpus(proc: Path = PROC, root: Path = CGROUP_ROOT,
                   pool: int | None = None) -> CPULimit:
    """The CPUs this process may use, and which limit decides.

    The smallest of: the CPU affinity mask, the cgroup CPU quota rounded up
    (a quota of 1.5 CPUs still runs two threads at once), and numba's thread
    pool (``pool``; numba's NUMBA_NUM_THREADS when None), which no sweep can
    exceed.  ``os.cpu_count()`` where none of them is known.
    """
    if pool is None:
        import numba
        pool = numba.config.NUMBA_NUM_THREADS
    limits = [(os.cpu_count() or 1, "os.cpu_count()")]
    aff = affinity_count()
    if aff is not None:
        limits.append((aff, "the CPU affinity mask (taskset, cpuset)"))
    quota = quota_cpus(proc, root)
    if quota is not None:
        limits.append((max(1, math.ceil(quota)), f"the cgroup CPU quota ({quota:g} CPUs)"))
    limits.append((pool, "numba's thread pool (NUMBA_NUM_THREADS)"))
    count, source = min(limits, key=lambda t: t[0])  # ties: the first, most basic source
    return CPULimit(max(1, count), source)
