"""Stop requests (SIGTERM / SIGINT) remembered from the first moment of a process.

`python -m engine` installs this before importing anything heavy, so a cancel that arrives while
torch is still loading is not lost: the trainer sees the flag at its first step, writes a
checkpoint and ends as cancelled.
"""
from __future__ import annotations

import signal

STOP = {"flag": False, "signal": None}


def _handler(signum, frame):
    STOP["flag"] = True
    STOP["signal"] = signum


def install() -> None:
    for s in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(s, _handler)
        except ValueError:  # not the main thread
            pass
