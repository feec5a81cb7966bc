"""How long the README's commands take here (issue 13): each documented command on the shared pack,
in order, in a temporary checkpoints folder; prints a table of wall-clock seconds.

Usage: python bench/command_times.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_PACK, REPO

NIH, COVID = str(DATA_PACK / "nih"), str(DATA_PACK / "covid")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="times-"))
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "CXR_CACHE_DIR": str(tmp / "cache")}
    image = next(p for p in sorted((DATA_PACK / "covid" / "images").iterdir()) if p.suffix.lower() in (".png", ".jpg",
                                                                                                          ".jpeg"))
    steps = [
        ("data summary", ["data", "summary", "--nih-root", NIH, "--covid-root", COVID]),
        ("train: the CPU smoke run (covid-scratch, 64 px, 2 epochs)",
         ["train", "--preset", "covid-scratch", "--covid-root", COVID, "--image-size", "64", "--epochs", "2",
          "--name", "smoke"]),
        ("train --resume smoke --epochs 3 (one more epoch)", ["train", "--resume", "smoke", "--epochs", "3"]),
        ("evaluate smoke (val and test, bootstrap CIs)", ["evaluate", "smoke", "--split", "both"]),
        ("evaluate smoke --operating-points", ["evaluate", "smoke", "--operating-points"]),
        ("evaluate smoke --on the collection (external)", ["evaluate", "smoke", "--on", COVID, "--name", "self"]),
        ("audit smoke", ["audit", "smoke"]),
        ("report", ["report"]),
        ("runs list", ["runs", "list"]),
        ("cam smoke --image (14 maps)", ["cam", "smoke", "--image", str(image), "--out", str(tmp / "cam")]),
        ("embed smoke --method tsne --space features", ["embed", "smoke", "--method", "tsne", "--space", "features"]),
        ("neighbours smoke", ["neighbours", "smoke"]),
        ("runs prune smoke", ["runs", "prune", "smoke"]),
    ]
    rows = []
    for what, args in steps:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=3600)
        rows.append((what, time.perf_counter() - t0, out.returncode))
        print(f"{what:<60} {rows[-1][1]:7.1f} s  exit {out.returncode}"
              + ("" if out.returncode == 0 else f"  {out.stderr.strip().splitlines()[-1][:160]}"), flush=True)
    return 0 if all(r[2] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
