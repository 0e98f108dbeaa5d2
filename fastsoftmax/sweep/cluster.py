"""The sweep on a Dask cluster: ``python -m fastsoftmax.sweep --scheduler ADDRESS``.

Each pack of the plan (groups that share a batch size and epoch count, see
:mod:`fastsoftmax.sweep.plan`) is one task.  A task runs the same compiled
:func:`fastsoftmax.sweep.engine._sweep` on :meth:`Plan.pack_plan`'s slice of the plan,
so each configuration sees exactly the arithmetic of a local sweep and the
results are bit-identical (on workers whose CPUs give the same machine code).
The data (training and validation images, labels and the minibatch orders) is
scattered to every worker once, not sent with each task.

A worker runs as many packs at once as it has Dask threads, each on one of
its cores: numba's own thread count is set to 1 inside every task, since
Dask, not numba, decides how many run (``dask worker --nthreads N``).

dask.distributed is the optional extra ``fastsoftmax[dask]``, imported only
here, and only when a scheduler is given.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .engine import _cycles, run_plan, seconds_per_cycle
from .plan import Plan, RunData

DASK_EXTRA = ("a Dask cluster needs dask.distributed: pip install 'fastsoftmax[dask]' "
              "(or, in a clone, pip install '.[dask]')")
CONNECT_SECONDS = 5.0  # how long an unreachable scheduler may take to be reported
WORKERS_SECONDS = 60.0  # how long to wait for a first worker to join


class ClusterError(RuntimeError):
    """The cluster cannot be used: Dask missing, the scheduler unreachable, no workers."""


def parse_scheduler(text: str, name: str = "--scheduler") -> tuple[str, object]:
    """("local", N) for ``local:N``, ("address", text) for a scheduler's address
    (``tcp://HOST:PORT``, or any other protocol Dask speaks); ValueError otherwise, its
    message naming the argument ``name``."""
    if text.startswith("local:"):
        try:
            n = int(text[len("local:"):])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{name} {text!r}: local:N needs a number of worker "
                             f"processes N >= 1")
        return "local", n
    if "://" in text and text.split("://", 1)[1]:
        return "address", text
    raise ValueError(f"{name} {text!r}: expected a scheduler's address such as "
                     f"tcp://HOST:PORT, or local:N for N worker processes on this machine")


_LAUNCH_LOCK = threading.Lock()


def _launch_guard():
    """Two threads may launch numba parallel regions at once only on a
    thread-safe threading layer (omp, tbb); on workqueue they take turns."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # nothing has run in parallel in this process yet
        return _LAUNCH_LOCK
    return contextlib.nullcontext() if layer in ("omp", "tbb") else _LAUNCH_LOCK


def train_pack(data: RunData, plan: Plan) -> dict:
    """A task: train the one pack of ``plan`` (from :meth:`Plan.pack_plan`) on a worker.

    Returns its Outputs, the snapshots of its configurations' models, and the
    seconds (P, E) from the pack's start to the end of each epoch.
    """
    numba.set_num_threads(1)  # this thread's parallel launches: one pack is one thread's work
    out = plan.outputs()
    snaps = plan.snapshots()
    stop = np.zeros(1, np.int64)
    c0, t0 = _cycles(), time.perf_counter()
    with _launch_guard(), threadpool_limits(limits=1):
        run_plan(plan, data, np.zeros((1, 1), np.int64), out, snaps, stop)
    seconds = ((out.epoch_end.astype(np.float64) - out.g_start[:, None].astype(np.float64))
               * seconds_per_cycle(c0, t0))
    return {"out": out, "snaps": snaps, "seconds": seconds}


def _client(scheduler: str, name: str):
    """A connected Client (and the LocalCluster it owns, or None)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError(DASK_EXTRA) from None
    kind, value = parse_scheduler(scheduler, name)
    if kind == "local":
        # Worker processes, one thread each (numba's kernels hold the GIL
        # between launches), on loopback only, without the dashboard.
        cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(value, timeout=CONNECT_SECONDS), None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"{name} {scheduler}: cannot reach the scheduler within "
                           f"{CONNECT_SECONDS:g} s ({type(exc).__name__}: {exc})") from None


def connect(scheduler: str, name: str = "--scheduler"):
    """A Client of ``scheduler`` (``tcp://HOST:PORT`` or ``local:N``, see parse_scheduler)
    with at least one worker, and the LocalCluster it owns (or None): close both.
    ClusterError when Dask is missing, the scheduler unreachable, or no worker joins;
    ValueError for a ``scheduler`` of neither form.  Messages name the argument ``name``."""
    client, cluster = _client(scheduler, name)
    try:
        client.wait_for_workers(1, timeout=WORKERS_SECONDS)
    except TimeoutError:
        address = client.scheduler.address
        disconnect(client, cluster)
        raise ClusterError(f"no worker joined the scheduler at {address} within "
                           f"{WORKERS_SECONDS:g} s") from None
    return client, cluster


def disconnect(client, cluster) -> None:
    """Close what :func:`connect` gave (either may be None)."""
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


class ClusterRunner:
    """The packs of a plan as tasks on a Dask cluster (:func:`.runner.run_sweep` with a
    scheduler).  Records come back as their packs finish.  A worker that dies has its
    packs run again elsewhere (Dask reschedules them; a pack's result is taken once).
    ClusterError when Dask is missing, the scheduler cannot be reached, no worker
    joins, or a pack fails for good."""

    def __init__(self, plan: Plan, X, y, X_val, y_val, seed: int, scheduler: str):
        self.plan, self.scheduler = plan, scheduler
        self.data = RunData.of(plan, X, y, X_val, y_val, seed)
        self.out = plan.outputs()
        self.snaps = plan.snapshots()
        self.secs = np.zeros(self.out.epoch_end.shape)
        self.client = self.cluster = None
        self.pending = {}  # future -> (pack index, the pack's own plan, as sent)
        self.done = 0  # epochs of the packs taken

    def prepare(self, on_phase) -> None:
        """Connect, wait for a worker, scatter the data, and submit every pack."""
        if on_phase is not None:
            on_phase("connect", 0)
        self.client, self.cluster = connect(self.scheduler)
        [shared] = self.client.scatter([self.data], broadcast=True)  # to every worker, once
        if on_phase is not None:
            on_phase("train", sum(self.client.nthreads().values()))
        plan = self.plan
        # Costliest packs first, so the last to finish are short ones.
        order = sorted(range(len(plan.packs)),
                       key=lambda p: -sum(plan.g_cost[g] for g in plan.packs[p]))
        for rank, p in enumerate(order):
            sub = plan.pack_plan(p)
            future = self.client.submit(
                train_pack, shared, sub, pure=False, priority=len(order) - rank, retries=2,
                key=f"fastsoftmax-pack-{p}-{id(plan):x}-{time.time_ns()}")
            self.pending[future] = p, sub

    def start(self) -> None:
        pass  # the packs were submitted by prepare

    def busy(self) -> bool:
        return bool(self.pending)

    def wait(self, seconds: float) -> None:
        """Take the packs that finish within ``seconds``."""
        from dask.distributed import wait

        try:
            finished, _ = wait(list(self.pending), timeout=seconds,
                               return_when="FIRST_COMPLETED")
        except TimeoutError:
            finished = set()
        for future in finished:
            self._take(future)

    def _take(self, future) -> None:
        from dask.distributed import CancelledError

        p, sub = self.pending.pop(future)
        try:
            result = future.result()
        except CancelledError:
            raise ClusterError("the cluster cancelled a task (was the scheduler restarted?)") \
                from None
        except Exception as exc:  # KilledWorker after Dask's retries, a worker without fastsoftmax
            raise ClusterError(f"a pack failed on the cluster: {type(exc).__name__}: {exc}") \
                from exc
        plan, out = self.plan, self.out
        members = plan.packs[p]
        part, E = result["out"], result["out"].objective.shape[1]
        for name in ("objective", "train_xent", "val_loss", "val_acc", "epoch_end"):
            getattr(out, name)[members, :E] = getattr(part, name)
        self.secs[members, :E] = result["seconds"]
        # the pack's configurations, in the order its own plan lists them
        cis = [ci for ci, (gi, _) in enumerate(plan.flat_configs) if gi in members]
        for j, ci in enumerate(cis):
            self.snaps[plan.c_off[ci]:plan.c_off[ci] + plan.c_size[ci]] = \
                result["snaps"][sub.c_off[j]:sub.c_off[j] + sub.c_size[j]]
        # progress last: new_records reads it as the sign that the rest is there
        out.diverged[members] = part.diverged
        out.epochs_done[members] = part.epochs_done
        self.done += int(plan.g_epochs[members].sum())

    def seconds(self, gi: int, last: int) -> float:
        return float(self.secs[gi, last - 1])

    def epochs_done(self) -> int:
        return self.done

    def stop(self) -> None:
        if self.pending:
            self.client.cancel(list(self.pending))
            self.pending.clear()

    def close(self) -> None:
        if self.client is not None:
            self.stop()
        disconnect(self.client, self.cluster)
        self.client = self.cluster = None

    def check(self) -> None:
        pass  # a failed pack raised ClusterError where it was taken
