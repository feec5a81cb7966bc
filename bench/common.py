"""Helpers for benchmarks: the data pack location and a best-of timer."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA_PACK = Path(os.environ.get("CXR_DATA_PACK", REPO.parent / "shared" / "data"))


def best_of(fn, repeat: int = 3) -> float:
    """Smallest wall time of `repeat` calls (the least disturbed by a noisy shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
