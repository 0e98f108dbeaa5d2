"""interrupts_never_lost: Ctrl-C during code we do not control (numba compiling) is never lost."""

import os
import signal
import sys
import time

import pytest

from fastsoftmax.host.interrupts import (Terminated, interrupts_never_lost, last_signal,
                                    terminate_as_interrupt)


class _SignalInFinaliser:
    """Delivers sig while Python runs this object's finaliser, as it does when Ctrl-C lands
    while numba frees an LLVM object: the KeyboardInterrupt is raised there and dropped."""

    def __init__(self, sig=signal.SIGINT):
        self.sig = sig

    def __del__(self):
        os.kill(os.getpid(), self.sig)
        time.sleep(0.05)  # the handler runs here, inside __del__


@pytest.fixture
def dropped(monkeypatch):
    """The exceptions Python reports as "Exception ignored" (and drops) during the test."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    return seen


def _drop_a_signal(sig=signal.SIGINT):
    _SignalInFinaliser(sig)  # freed at once: the signal arrives inside __del__


def test_without_it_a_signal_in_a_finaliser_is_lost(dropped):
    # The failure the context manager exists for: nothing is raised, the code goes on.
    _drop_a_signal()
    assert dropped == [KeyboardInterrupt]


def test_a_signal_dropped_in_a_finaliser_is_raised_on_leaving_the_block(dropped):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_never_lost() as flag:
            _drop_a_signal()
            finished.append(True)  # the dropped signal did not stop the block
    assert finished == [True] and flag.requested
    assert dropped == []  # not reported as "Exception ignored": it was not
    assert last_signal() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_after_the_signal_is_reported_as_the_interruption(dropped):
    with pytest.raises(KeyboardInterrupt) as info:
        with interrupts_never_lost():
            _drop_a_signal()
            raise RuntimeError("no compiled object yet")  # numba, half-built
    assert dropped == [] and isinstance(info.value.__cause__, RuntimeError)


def test_a_signal_outside_a_finaliser_raises_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_never_lost():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            reached.append(True)
    assert reached == []


def test_an_error_without_a_signal_is_left_alone(dropped):
    class Broken:
        def __del__(self):
            raise ValueError("a finaliser's own error")

    with pytest.raises(RuntimeError, match="plain"):
        with interrupts_never_lost() as flag:
            Broken()
            raise RuntimeError("plain")
    assert not flag.requested
    assert dropped == [ValueError]  # other finalisers' errors are reported as before


def test_sigterm_dropped_in_a_finaliser_comes_back_as_terminated(dropped):
    with terminate_as_interrupt():
        with pytest.raises(Terminated):
            with interrupts_never_lost():
                _drop_a_signal(signal.SIGTERM)
        assert dropped == [] and last_signal() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
