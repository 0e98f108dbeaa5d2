"""The sweep on this machine's cores: :func:`run_sweep`."""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .. import kernels
from ..host.cpus import available_cpus
from ..host.interrupts import interrupts_never_lost, noted_interrupts
from ..params import minibatch_orders
from .engine import _cycles, new_records, run_plan, seconds_per_cycle, trained_params
from .grid import Config, assign_workers
from .plan import PACK_SIZE, _rows_padded, make_plan
from .results import Record, SweepOutput


def run_sweep(configs: list[Config], X, y, X_val, y_val, *, n_classes: int = 10,
              workers: int = 1, seed: int = 0, on_record=None, on_progress=None,
              on_phase=None, poll_seconds: float = 0.2, dtype=None,
              pack_size: int = PACK_SIZE) -> SweepOutput:
    """Train every configuration on (X, y), validating on (X_val, y_val).

    X, X_val : (n, D) arrays, validated: both of the model dtype (float32 or
        float64), or both uint8 pixels (scaled by 1/255 as they are read)
    dtype : the model dtype; defaults to X's, or float32 for uint8 X
    y, y_val : (n,) int64
    workers : threads for the parallel region (numba); BLAS is held to 1.
        At most the CPUs this process may use (:func:`fastsoftmax.cpus.available_cpus`:
        affinity mask, cgroup quota, numba's pool): more would only queue, and
        the results do not depend on it
    seed : initialisation and minibatch order (shared by all configurations)
    on_record(Record) : called as each configuration finishes
    on_progress(epochs_done, epochs_total) : called every ``poll_seconds``
    on_phase(name, workers) : called with "compile" before the kernels are
        compiled (or loaded from numba's cache) and "train" before training
        starts; workers is how many threads will train
    pack_size : at most this many groups train together, holding at most
        PACK_BYTES of weights (same results for any value; fewer, larger packs
        share more memory traffic but leave fewer jobs to balance across
        workers, and weights that outgrow the cache)

    Ctrl-C (SIGINT) while training stops every worker after its current
    epoch; the finished configurations are returned with ``interrupted``
    (on_record is never cut short).  Compilation runs in the calling thread
    before training, so Ctrl-C there raises KeyboardInterrupt as usual.
    """
    plan = make_plan(configs, X, X_val, n_classes=n_classes, seed=seed, dtype=dtype,
                     pack_size=pack_size)
    table = kernels.table_for(X, plan.dtype)
    orders = minibatch_orders(X.shape[0], plan.epochs, seed)
    out = plan.outputs()
    snaps = np.zeros(int(sum(plan.c_size)), plan.dtype)
    W = max(1, min(workers, available_cpus().count, len(plan.packs)))
    workers_plan = _rows_padded(assign_workers(
        [sum(plan.g_cost[g] for g in p) for p in plan.packs], W))
    stop = np.zeros(W, np.int64)

    def run(rows):
        run_plan(plan, X, y, X_val, y_val, table, orders, rows, out, snaps, stop)

    # Compile (or load from the cache) here, with no work to do: Ctrl-C
    # reaches this thread and stops a compile at once, where in the worker
    # thread it could only wait for the compile to end.
    if on_phase is not None:
        on_phase("compile", W)
    with interrupts_never_lost():
        run(workers_plan[:0])
    _cycles()
    if on_phase is not None:
        on_phase("train", W)

    error: list[BaseException] = []

    def work():
        try:
            with threadpool_limits(limits=1):  # no BLAS threads inside the parallel region
                run(workers_plan)
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    previous_threads = numba.get_num_threads()
    numba.set_num_threads(W)
    records: dict[int, Record] = {}
    total_epochs = int(plan.g_epochs.sum())

    # Cycles to seconds, calibrated over the whole run.
    c0, t0 = _cycles(), time.perf_counter()

    def seconds(gi, last) -> float:
        cycles = int(out.epoch_end[gi, last - 1]) - int(out.g_start[gi])
        return cycles * seconds_per_cycle(c0, t0)

    def collect():
        for rec in new_records(plan, out, records, seconds):
            if on_record is not None:
                on_record(rec)

    interrupted = False
    thread = threading.Thread(target=work, name="fastsoftmax-sweep", daemon=True)
    # Ctrl-C is noted, not raised, so that it never lands between a record
    # being taken and on_record having written it.
    with noted_interrupts() as ctrl_c:
        try:
            thread.start()
            while thread.is_alive():
                try:
                    thread.join(poll_seconds)
                    collect()
                    if on_progress is not None:
                        on_progress(int(np.minimum(out.epochs_done, plan.g_epochs).sum()),
                                    total_epochs)
                except KeyboardInterrupt:  # where SIGINT has a handler of its own
                    interrupted = True
                if ctrl_c.requested:
                    interrupted = True
                if interrupted:
                    stop[:] = 1  # workers return after their current epoch
        finally:
            if thread.is_alive():
                stop[:] = 1
                thread.join()
            numba.set_num_threads(previous_threads)
    if error:
        raise error[0]
    collect()
    ordered = [records[ci] for ci in sorted(records)]
    return SweepOutput(ordered, trained_params(plan, records, snaps), interrupted)
