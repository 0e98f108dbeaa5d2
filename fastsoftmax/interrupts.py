"""Ctrl-C as a request to stop at a safe point, not an exception at an arbitrary line.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread
happens to be: between writing a result and recording that it was written,
say.  Around such stretches the sweep asks for the signal to be *noted*
instead, and acts on it where it is safe to.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interruption:
    """requested : bool, set when SIGINT arrived inside :func:`noted_interrupts`."""

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
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield flag
        return

    def note(signum, frame):
        flag.requested = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def finish_then_interrupt():
    """Run the block to its end even if Ctrl-C comes, then raise KeyboardInterrupt
    if it came: for work that must not stop halfway (writing a set of files)."""
    with noted_interrupts() as flag:
        yield
    if flag.requested:
        raise KeyboardInterrupt
