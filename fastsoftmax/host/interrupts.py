"""Ctrl-C as a request to stop at a safe point, not an exception at an arbitrary line.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread
happens to be: between writing a result and recording that it was written,
say.  Around such stretches the sweep asks for the signal to be *noted*
instead, and acts on it where it is safe to.

SIGTERM (``kill``, ``docker stop``, a batch scheduler's time limit) ends a
Python process at once by default.  A command line that wants it handled as
Ctrl-C is (stop at a safe point, keep what is done) calls
:func:`terminate_as_interrupt` first; a library caller's SIGTERM is left alone.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, where :func:`terminate_as_interrupt` asked for it."""


_received: list = []  # the signals noted or raised, in order


def last_signal():
    """The last SIGINT or SIGTERM noted or raised in this process, or None."""
    return _received[-1] if _received else None


def _raise_terminated(signum, frame):
    _received.append(signal.SIGTERM)
    raise Terminated


@contextmanager
def terminate_as_interrupt():
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt), so
    that it is handled wherever Ctrl-C is; only in the main thread, and only where
    SIGTERM still has the default action (an ignored or handled SIGTERM stays so)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL):
        yield
        return
    _received.clear()  # last_signal() speaks of this run only
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Interruption:
    """requested : bool, set when SIGINT (or SIGTERM, see :func:`terminate_as_interrupt`)
    arrived inside :func:`noted_interrupts`."""

    def __init__(self):
        self.requested = False


@contextmanager
def noted_interrupts():
    """While inside, SIGINT sets ``requested`` on the yielded Interruption
    instead of raising KeyboardInterrupt; the previous handler comes back on exit.

    It acts only where SIGINT has Python's default handler and only in the
    main thread (the one Python delivers signals to).  A process started with
    SIGINT ignored (as a non-interactive shell starts its ``&`` jobs) keeps
    ignoring it, and a program's own handler is left in place; there the flag
    is never set and KeyboardInterrupt, if any, is raised as usual.
    """
    flag = Interruption()

    def note(signum, frame):
        _received.append(signum)
        flag.requested = True

    with _handling(note):
        yield flag


@contextmanager
def interrupts_never_lost():
    """Ctrl-C (and SIGTERM where :func:`terminate_as_interrupt` raises it) raises at once,
    as usual, and is also noted, so it cannot be lost: for long stretches of library code
    that we do not control, such as numba compiling.

    Python runs a signal handler between any two bytecodes, including those of a
    finaliser (``__del__``); a KeyboardInterrupt raised there is printed as "Exception
    ignored" and dropped.  Numba's compiler frees LLVM objects through finalisers all
    the time: of 24 Ctrl-Cs at random moments of a first-run sweep's compile, 1 was
    lost (the run went on to the end) and 2 ended in a RuntimeError from half-built code.
    Here a noted signal is raised on leaving the block, and any other exception raised
    after it is reported as the interruption it was; the "Exception ignored" report of
    a dropped one is not printed, since it is not lost.  Main thread only, and only
    where the signal has Python's default handler (or terminate_as_interrupt's).
    """
    flag = Interruption()

    def note_and_raise(signum, frame):
        _received.append(signum)
        flag.requested = True
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def quiet_about_ours(unraisable):
        if not (flag.requested and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            report(unraisable)

    with _handling(note_and_raise):
        report, sys.unraisablehook = sys.unraisablehook, quiet_about_ours
        try:
            yield flag
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            if flag.requested:  # the signal broke what it interrupted
                raise _interruption() from exc
            raise
        finally:
            sys.unraisablehook = report
    if flag.requested:  # raised inside a finaliser and dropped there
        raise _interruption()


@contextmanager
def _handling(handler):
    """While inside, ``handler`` takes SIGINT and SIGTERM wherever each has Python's
    default handler (or terminate_as_interrupt's), in the main thread only (the one
    Python delivers signals to); the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_terminated}
    taken = [s for s, default in wanted.items() if signal.getsignal(s) is default]
    previous = {s: signal.signal(s, handler) for s in taken}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _interruption() -> KeyboardInterrupt:
    return Terminated() if last_signal() == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def finish_then_interrupt():
    """Run the block to its end even if Ctrl-C comes, then raise KeyboardInterrupt
    if it came: for work that must not stop halfway (writing a set of files)."""
    with noted_interrupts() as flag:
        yield
    if flag.requested:
        raise KeyboardInterrupt


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


def os_failure(exc: OSError) -> str:
    """An OSError as a command's one line says it: the path and the errno's words."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def report_stop(program: str, kept: str) -> int:
    """After a KeyboardInterrupt: one line on stderr saying how the run stopped
    (Ctrl-C or SIGTERM) and what is ``kept``; returns the exit status, 130 or 143."""
    if last_signal() == signal.SIGTERM:
        print(f"{program}: terminated (SIGTERM); {kept}", file=sys.stderr)
        return EXIT_TERMINATED
    print(f"{program}: interrupted; {kept}", file=sys.stderr)
    return EXIT_INTERRUPTED
