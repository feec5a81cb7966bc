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


NIH_META = ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt", "BBox_List_2017.csv")


def link_nih_root(dest, n: int | None = None, pack=DATA_PACK, seed: int = 0) -> tuple[Path, str]:
    """A ChestX-ray14 root at full size (n=None: all 112,120 rows) or a patient-ordered subset of n
    images, built from the pack: the real metadata rows and official lists, and every image name a
    hard link to one of the pack's 658 real 512-px images (a symlink where hard links fail), so it
    costs no extra disk. Returns (root, "hardlink" | "symlink")."""
    import numpy as np

    dest = Path(dest)
    (dest / "images").mkdir(parents=True, exist_ok=True)
    src = Path(pack) / "nih"
    rows = (src / NIH_META[0]).read_text().splitlines()
    header, body = rows[0], rows[1:]
    if n is not None and n < len(body):
        body = body[:n]  # the file is ordered by patient: a prefix keeps patients whole
    names = [r.split(",", 1)[0] for r in body]
    keep = set(names)
    (dest / NIH_META[0]).write_text("\n".join([header, *body]) + "\n")
    for lst in NIH_META[1:3]:
        kept = [x for x in (src / lst).read_text().split() if x in keep]
        (dest / lst).write_text("\n".join(kept))
    (dest / NIH_META[3]).write_text((src / NIH_META[3]).read_text())
    real = sorted((src / "images").glob("*.png"))
    pick = np.random.default_rng(seed).integers(0, len(real), len(names))
    mode = "hardlink"
    for name, k in zip(names, pick):
        target = dest / "images" / name
        if target.exists():
            continue
        try:
            os.link(real[k], target)
        except OSError:
            mode = "symlink"
            os.symlink(real[k], target)
    return dest, mode
