"""The packs of a plan trained on this machine's cores, in one parallel call of the engine
on a thread of its own (the calling thread polls it: see :mod:`.runner`)."""

from __future__ import annotations

import threading
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from ..host.cpus import available_cpus
from ..host.interrupts import interrupts_never_lost
from .engine import _cycles, run_plan, seconds_per_cycle
from .grid import assign_workers
from .plan import Plan, RunData, _rows_padded


class LocalRunner:
    """Worker threads of numba's parallel region, at most ``workers`` and at most the CPUs
    this process may use; the packs go to them costliest first (grid.assign_workers)."""

    def __init__(self, plan: Plan, X, y, X_val, y_val, seed: int, workers: int):
        self.plan = plan
        self.data = RunData.of(plan, X, y, X_val, y_val, seed)
        self.out = plan.outputs()
        self.snaps = plan.snapshots()
        self.W = max(1, min(workers, available_cpus().count, len(plan.packs)))
        self.rows = _rows_padded(assign_workers(
            [sum(plan.g_cost[g] for g in p) for p in plan.packs], self.W))
        self.stop_flags = np.zeros(self.W, np.int64)  # one per worker: see engine._sweep
        self.error: list[BaseException] = []
        self.thread = threading.Thread(target=self._work, name="fastsoftmax-sweep", daemon=True)
        self.previous_threads = None

    def _run(self, rows):
        run_plan(self.plan, self.data, rows, self.out, self.snaps, self.stop_flags)

    def _work(self):
        try:
            with threadpool_limits(limits=1):  # no BLAS threads inside the parallel region
                self._run(self.rows)
        except BaseException as exc:  # re-raised in the caller's thread by check()
            self.error.append(exc)

    def prepare(self, on_phase) -> None:
        """Compile (or load from the cache) here, with no work to do: Ctrl-C reaches this
        thread and stops a compile at once, where in the worker thread it could only wait
        for the compile to end."""
        if on_phase is not None:
            on_phase("compile", self.W)
        with interrupts_never_lost():
            self._run(self.rows[:0])
        _cycles()
        if on_phase is not None:
            on_phase("train", self.W)
        self.previous_threads = numba.get_num_threads()
        numba.set_num_threads(self.W)
        self.c0, self.t0 = _cycles(), time.perf_counter()  # cycles to seconds, over the run

    def start(self) -> None:
        self.thread.start()

    def busy(self) -> bool:
        return self.thread.is_alive()

    def wait(self, seconds: float) -> None:
        self.thread.join(seconds)

    def seconds(self, gi: int, last: int) -> float:
        """Wall time of group gi from its pack's start to the end of its epoch ``last``."""
        cycles = int(self.out.epoch_end[gi, last - 1]) - int(self.out.g_start[gi])
        return cycles * seconds_per_cycle(self.c0, self.t0)

    def epochs_done(self) -> int:
        return int(np.minimum(self.out.epochs_done, self.plan.g_epochs).sum())

    def stop(self) -> None:
        self.stop_flags[:] = 1  # workers return after their current epoch

    def close(self) -> None:
        if self.thread.is_alive():
            self.stop()
            self.thread.join()
        if self.previous_threads is not None:
            numba.set_num_threads(self.previous_threads)
            self.previous_threads = None

    def check(self) -> None:
        if self.error:
            raise self.error[0]
