""":func:`run_sweep`: a grid trained on this machine's cores or on a Dask cluster, its
records handed over as they finish, Ctrl-C honoured; one loop for both."""

from __future__ import annotations

from ..host.interrupts import noted_interrupts
from .engine import new_records, trained_params
from .grid import Config
from .local import LocalRunner
from .plan import PACK_SIZE, make_plan
from .results import Record, SweepOutput


def run_sweep(configs: list[Config], X, y, X_val, y_val, *, n_classes: int = 10,
              workers: int = 1, scheduler: str | None = None, seed: int = 0, on_record=None,
              on_progress=None, on_phase=None, poll_seconds: float = 0.2, dtype=None,
              pack_size: int = PACK_SIZE) -> SweepOutput:
    """Train every configuration on (X, y), validating on (X_val, y_val).

    X, X_val : (n, D) arrays, validated: both of the model dtype (float32 or
        float64), or both uint8 pixels (scaled by 1/255 as they are read)
    dtype : the model dtype; defaults to X's, or float32 for uint8 X
    y, y_val : (n,) int64
    workers : threads for the parallel region (numba); BLAS is held to 1.
        At most the CPUs this process may use (:func:`fastsoftmax.host.cpus.available_cpus`:
        affinity mask, cgroup quota, numba's pool): more would only queue, and
        the results do not depend on it
    scheduler : train on a Dask cluster instead (:mod:`.cluster`): ``tcp://HOST:PORT``
        of a running scheduler, or ``local:N`` to start N worker processes here; the
        results are the same, bit for bit
    seed : initialisation and minibatch order (shared by all configurations)
    on_record(Record) : called as each configuration finishes
    on_progress(epochs_done, epochs_total) : called every ``poll_seconds``
    on_phase(name, workers) : on this machine, called with "compile" before the kernels
        are compiled (or loaded from numba's cache); on a cluster, with "connect"
        before reaching it; then "train" before training starts, with how many
        threads will train
    pack_size : at most this many groups train together, holding at most
        PACK_BYTES of weights (same results for any value; fewer, larger packs
        share more memory traffic but leave fewer jobs to balance across
        workers, and weights that outgrow the cache)

    Ctrl-C (SIGINT) while training stops every worker after its current epoch (a
    cluster's tasks are cancelled); the finished configurations are returned with
    ``interrupted`` (on_record is never cut short).  Compilation runs in the calling
    thread before training, so Ctrl-C there raises KeyboardInterrupt as usual.
    """
    plan = make_plan(configs, X, X_val, n_classes=n_classes, seed=seed, dtype=dtype,
                     pack_size=pack_size)
    if scheduler is None:
        runner = LocalRunner(plan, X, y, X_val, y_val, seed, workers)
    else:
        from .cluster import ClusterRunner  # dask.distributed, only when asked for
        runner = ClusterRunner(plan, X, y, X_val, y_val, seed, scheduler)
    try:
        runner.prepare(on_phase)
        records, interrupted = _drive(runner, on_record, on_progress, poll_seconds)
    finally:
        runner.close()
    runner.check()
    _collect(runner, records, on_record)
    ordered = [records[ci] for ci in sorted(records)]
    return SweepOutput(ordered, trained_params(plan, records, runner.snaps), interrupted)


def _collect(runner, records: dict, on_record) -> None:
    for rec in new_records(runner.plan, runner.out, records, runner.seconds):
        if on_record is not None:
            on_record(rec)


def _drive(runner, on_record, on_progress, poll_seconds) -> tuple[dict[int, Record], bool]:
    """Poll the runner until it is done, handing over records as they finish.

    Ctrl-C is noted, not raised, so that it never lands between a record being
    taken and on_record having written it; the runner is asked to stop, and the
    records finished by then still come through."""
    records: dict[int, Record] = {}
    total = int(runner.plan.g_epochs.sum())
    interrupted = False
    with noted_interrupts() as ctrl_c:
        try:
            runner.start()
            while runner.busy():
                try:
                    runner.wait(poll_seconds)
                    _collect(runner, records, on_record)
                    if on_progress is not None:
                        on_progress(runner.epochs_done(), total)
                except KeyboardInterrupt:  # where SIGINT has a handler of its own
                    interrupted = True
                interrupted = interrupted or ctrl_c.requested
                if interrupted:
                    runner.stop()
        finally:
            runner.close()
    return records, interrupted
