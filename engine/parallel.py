"""Process pools that never outlive the stage that started them.

`worker_pool` wraps `multiprocessing.Pool`: its workers ignore SIGINT (the parent decides), die with
their parent (Linux `PR_SET_PDEATHSIG`, so even a `kill -9` of the parent leaves none behind), and
are terminated when the `with` block ends for any reason. `stop_on_signals` turns SIGTERM/SIGINT
into a `StageStopped` exception in the main thread, so a stage can commit what it finished and end
its pool before the process exits (a plain SIGTERM would kill the parent and orphan the workers).
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

_PR_SET_PDEATHSIG = 1


class StageStopped(Exception):
    """A stop signal arrived during a long stage; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the `with` block's terminate() still ends them
        pass


def _init_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    if parent > 0 and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()):
    """A `multiprocessing.Pool` of `workers` processes, terminated (not joined) on exit.

    Fork is used from a single-threaded process (the CLI: cheap, nothing to re-import); a process
    with threads (the dashboard's server) uses forkserver, because forking a threaded process can
    copy a held lock into the child."""
    method = "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "forkserver"
    ctx = mp.get_context(method)
    parent = os.getpid() if method == "fork" else -1
    pool = ctx.Pool(workers, initializer=_init_worker, initargs=(parent, initializer, initargs))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


@contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Raise StageStopped in the main thread when one of `signals` arrives; previous handlers are
    restored on exit. Outside the main thread it does nothing (handlers cannot be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise StageStopped(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
