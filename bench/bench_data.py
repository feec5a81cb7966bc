"""Issue 2 benchmarks: cached vs decoded training batches; cache build vs a naive PIL loop.

Prints ratios measured in one run, on the trainer's pipeline: uint8 gray batches out of the loader,
normalised by normalise_batch on the training device (its CPU cost is printed too), (targets:
cache >= 10x faster per batch; build throughput per
core at least on par with naive PIL). Usage: python bench/bench_data.py
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch
from common import DATA_PACK, best_of
from PIL import Image

from engine.data import ImageCache, NIHChestXray14, build_cache, build_transform, collate
from engine.data.transforms import normalise_batch


def batches(ds, n_batches: int, batch_size: int = 16) -> None:
    """Batches as the DataLoader hands them to the trainer (collated)."""
    idx = np.arange(n_batches * batch_size) % len(ds)
    for b in range(n_batches):
        collate([ds[int(i)] for i in idx[b * batch_size:(b + 1) * batch_size]])


def main() -> None:
    torch.set_num_threads(1)
    # the trainer's pipeline: uint8 gray out of the loader, normalised on the training device
    nih = NIHChestXray14(DATA_PACK / "nih", transform=build_transform(True, size=224, normalise=False))
    paths = nih.frame["path"].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        workers = os.cpu_count() or 1
        t0 = time.perf_counter()
        rep = build_cache(paths, f"{tmp}/c", size=256, workers=workers)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in paths:  # the naive loop: one process, PIL open + convert + resize
            with Image.open(p) as im:
                im.convert("L").resize((256, 256), Image.BILINEAR)
        t_naive = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_cache(paths, f"{tmp}/c1", size=256, workers=1)
        t_one = time.perf_counter() - t0
        per_core_build = len(paths) / t_build / workers
        per_core_naive = len(paths) / t_naive
        print(f"cache build: {len(paths)} images ({rep.decoded} decoded) in {t_build:.2f}s on {workers} processes "
              f"= {per_core_build:.0f} img/s/core; 1 process {len(paths) / t_one:.0f} img/s; naive PIL loop "
              f"{per_core_naive:.0f} img/s (1 core)")
        print(f"RATIO build_per_core/naive = {per_core_build / per_core_naive:.2f} with {workers} processes, "
              f"{len(paths) / t_one / per_core_naive:.2f} with 1 (target >= 1.0)")
        t0 = time.perf_counter()
        rep2 = build_cache(paths, f"{tmp}/c", size=256, workers=workers)
        print(f"incremental rebuild with nothing changed: {time.perf_counter() - t0:.2f}s ({rep2.reused} reused)")

        n = 8
        decoded = best_of(lambda: batches(nih, n), 2)
        cached_ds = NIHChestXray14(DATA_PACK / "nih", transform=build_transform(True, size=224, normalise=False),
                                   cache=ImageCache(f"{tmp}/c"))
        cached = best_of(lambda: batches(cached_ds, n), 2)
        host = cached_ds.with_transform(build_transform(True, size=224))  # float RGB made per image on the host
        cached_host = best_of(lambda: batches(host, n), 2)
        decoded_host = best_of(lambda: batches(nih.with_transform(build_transform(True, size=224)), n), 2)
        noaug = NIHChestXray14(DATA_PACK / "nih", cache=ImageCache(f"{tmp}/c"))
        read_only = best_of(lambda: batches(noaug, n), 2)
        print(f"batch of 16 at 224 px with augmentation, one core: decode PNGs {decoded / n * 1000:.1f} ms, "
              f"from cache {cached / n * 1000:.1f} ms (pixel read alone {read_only / n * 1000:.2f} ms)")
        print(f"RATIO decode/cache per batch = {decoded / cached:.1f}x (target >= 10x); "
              f"pixel access alone {decoded / max(read_only, 1e-9):.0f}x  [pack PNGs are 512 px]")
        u8 = collate([cached_ds[i] for i in range(16)])["images"]
        t_norm = best_of(lambda: normalise_batch(u8), 5)
        print(f"  normalise_batch of that uint8 batch: {t_norm * 1000:.1f} ms on this CPU (the trainer runs it on its "
              f"device; counted in: ratio {decoded / (cached + n * t_norm):.1f}x)")
        print(f"  with float RGB normalised per image on the host instead: decode {decoded_host / n * 1000:.1f} ms, "
              f"cache {cached_host / n * 1000:.1f} ms, ratio {decoded_host / cached_host:.1f}x")
        # Real NIH files are 1024x1024 PNGs: re-encode 64 pack images at that size (a stand-in with
        # the real decode cost) and time the uncached path again; the cached path does not change.
        big = f"{tmp}/big"
        os.makedirs(big)
        sub = nih.select(np.arange(64))
        for i, p in enumerate(sub.frame["path"]):
            Image.open(p).convert("L").resize((1024, 1024), Image.LANCZOS).save(f"{big}/{i}.png")
        sub.frame["path"] = [f"{big}/{i}.png" for i in range(64)]
        decoded_1024 = best_of(lambda: batches(sub, 4), 2)
        print(f"same with 1024 px source PNGs (the NIH originals' size): decode {decoded_1024 / 4 * 1000:.1f} ms "
              f"per batch; RATIO decode/cache = {decoded_1024 / 4 / (cached / n):.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
