"""Issue 24: how often the perceptual-hash duplicate test matches films known to differ, and what the
second test (pixel correlation at 32 px) leaves of those matches.

Films known to differ: images of different patients. Sets: the pack's 658 ChestX-ray14 images at
512 px, its 1,000 at 64 px (another 264 patients), and the two sets against each other (as an outside
collection meets a training set). True duplicates for the second test's other side: the COVID-19
collection's pairs found within it (the same film under two names). Usage:
    python bench/bench_duplicates.py
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from common import DATA_PACK

from engine.data.duplicates import (CONFIRM_CORRELATION, DEFAULT_MAX_DISTANCE, confirm_pairs, cross_pairs,
                                    duplicate_pairs, image_hashes)
from engine.data.tasks import open_collection


def _patients(folder: str) -> tuple[list[str], np.ndarray]:
    meta = pd.read_csv(DATA_PACK / "nih" / "Data_Entry_2017_v2020.csv", usecols=["Image Index", "Patient ID"])
    pid = dict(zip(meta["Image Index"], meta["Patient ID"].astype(str)))
    paths = sorted(str(p) for p in (DATA_PACK / "nih" / folder).iterdir() if p.suffix == ".png")
    return paths, np.array([pid.get(p.rsplit("/", 1)[1], "?") for p in paths])


def main() -> None:
    t0 = time.perf_counter()
    sets = {name: _patients(folder) for name, folder in (("512 px", "images"), ("64 px", "images_64px"))}
    hashes = {name: image_hashes(paths)[0] for name, (paths, _) in sets.items()}
    print(f"hashed {sum(len(p) for p, _ in sets.values())} images in {time.perf_counter() - t0:.1f}s")
    for name, (paths, pids) in sets.items():
        pairs = [(i, j, d) for i, j, d in duplicate_pairs(hashes[name]) if pids[i] != pids[j]]
        n = len(paths) * (len(paths) - 1) // 2
        kept, dropped = confirm_pairs(paths, paths, pairs)
        print(f"{name}: {len(paths)} images, {n:,} pairs of different patients' films; within {DEFAULT_MAX_DISTANCE} "
              f"bits: {len(pairs)} (false-match rate {len(pairs) / n:.2e}); confirmed by r >= {CONFIRM_CORRELATION}: "
              f"{len(kept)}" + (f"; their r: {', '.join(f'{r:.2f}' for *_, r in dropped[:8])}" if dropped else ""))
    (pa, ia), (pb, ib) = sets["512 px"], sets["64 px"]
    cross = [(i, j, d) for i, j, d in cross_pairs(hashes["512 px"], hashes["64 px"]) if ia[i] != ib[j]]
    kept, dropped = confirm_pairs(pa, pb, cross)
    n = len(pa) * len(pb)
    print(f"512 px vs 64 px: {n:,} pairs of different patients' films; within {DEFAULT_MAX_DISTANCE} bits: {len(cross)} "
          f"(rate {len(cross) / n:.2e}); confirmed: {len(kept)}")
    same = [(i, j, d) for i, j, d in cross_pairs(hashes["512 px"], hashes["64 px"]) if ia[i] == ib[j]]
    print(f"512 px vs 64 px, same patient: {len(same)} hash matches")
    covid = open_collection("covid", DATA_PACK / "covid")
    cp = covid.frame["path"].tolist()
    true_pairs = duplicate_pairs(image_hashes(cp)[0])
    ok, missed = confirm_pairs(cp, cp, true_pairs)
    print(f"COVID-19 collection: {len(true_pairs)} duplicate pairs by hash, {len(ok)} confirmed "
          f"(r {min(r for *_, r in ok):.3f}-{max(r for *_, r in ok):.3f}), {len(missed)} rejected")
    # at full size: 86,524 training hashes against an outside set of 10,000 give 8.7e8 pairs
    rate = max(len(cross) / n, 1 / n)
    print(f"at full size (86,524 train+val films x 10,000 outside films = {86_524 * 10_000:,} pairs), a rate of "
          f"{rate:.1e} would give about {rate * 86_524 * 10_000:,.0f} false hash matches before the second test")


if __name__ == "__main__":
    main()
