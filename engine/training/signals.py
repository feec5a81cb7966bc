"""Stop requests: SIGTERM / SIGINT ask the run being trained to stop after its current step.

`python -m engine` calls `install()` before importing anything heavy, so a cancel that arrives
while torch is still loading is kept as *pending* and taken by the next run (`stop_requests`).
A request belongs to one run: when that run ends the request is cleared and the previous handlers
are restored, so a later run in the same process starts clean.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_pending: dict = {"signal": None}


def _remember(signum, frame) -> None:
    _pending["signal"] = signum


def install() -> None:
    """Remember a stop signal that arrives before any run has started (process start-up)."""
    _set_handlers(_remember)


def _set_handlers(handler) -> dict:
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # only the main thread may set handlers; a run in a thread cannot be signalled
    for s in STOP_SIGNALS:
        previous[s] = signal.signal(s, handler)
    return previous


class StopRequest:
    """Whether (and by which signal) the current run was asked to stop."""

    def __init__(self, signum=None):
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, signum=signal.SIGTERM) -> None:
        self.signal = signum

    def describe(self) -> str:
        return f"cancelled by signal {signal.Signals(self.signal).name}" if self.signal else "cancelled"


@contextmanager
def stop_requests():
    """A fresh StopRequest for one run, fed by SIGTERM/SIGINT (and by a signal still pending from
    start-up); on exit the previous handlers come back and nothing is left pending."""
    stop = StopRequest(_pending["signal"])
    _pending["signal"] = None
    previous = _set_handlers(lambda signum, frame: stop.request(signum))
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _pending["signal"] = None


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: loader workers are never the target of a cancel (a stop signal
    sent to the whole process group must not kill them mid-batch); the loader shuts them down."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
