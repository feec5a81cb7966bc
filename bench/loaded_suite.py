"""Run the test suite on a busy machine: two CPU-bound processes spin beside it for its whole
length (users' machines are shared; CI's is not). Prints the suite's result and wall time.

Usage: python bench/loaded_suite.py [--load 2] [pytest args...]
"""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

from common import REPO


def spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def main() -> int:
    args = sys.argv[1:]
    load = 2
    if args[:1] == ["--load"]:
        load, args = int(args[1]), args[2:]
    stop = mp.Event()
    workers = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(load)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    try:
        # waits in browser and server tests stretch on a busy machine (tests/conftest.py: TIME_FACTOR)
        env = {**os.environ, "CXR_TEST_TIME_FACTOR": os.environ.get("CXR_TEST_TIME_FACTOR", "3")}
        rc = subprocess.call([sys.executable, "-m", "pytest", *args], cwd=REPO, env=env)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
    print(f"suite with {load} CPU-bound processes beside it: exit {rc} in {time.perf_counter() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
