"""Issue 34, beside the peer: one epoch's data path on the same images, in one run, two ways: the lab's
readers and image cache, and torchxrayvision's dataset classes (NIH_Dataset, CheX_Dataset; it ships in
requirements). Each delivers 224 x 224 single-channel tensors with their labels to a DataLoader
(batch 16, no augmentation on either side, one process and one thread, so CPU-s is the data path's own).

  NIH       the pack's 658 ChestX-ray14 images at 512 px, in ChestX-ray14's flat layout and its metadata
            (restricted to the images present, so both read the same 658)
  CheXpert  the same 658 images as a CheXpert-v1.0-small layout (train.csv, JPEG files at
            train/patientN/study1/view1_frontal.jpg), read by the lab's CheXpert reader and by CheX_Dataset

The lab's path builds its image cache first (once per collection and size; its time is printed
separately), then reads from it every epoch; its uncached decode path is timed too. torchxrayvision
decodes every image every epoch (skimage), then center-crops and resizes.

Prints images/s and CPU-s per epoch for each, and the ratios peer / lab (> 1: the lab is faster).
Usage: python bench/bench_peer.py [--epochs 2]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import DATA_PACK

SIZE = 224


def _epoch(ds, collate=None) -> tuple[float, float, int]:
    """(wall s, CPU s, images) of one pass over `ds` through a DataLoader (batch 16, no workers)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False, num_workers=0, collate_fn=collate)
    w, c, n = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        images = batch["img"] if "img" in batch else batch["images"]
        assert tuple(images.shape[-2:]) == (SIZE, SIZE), images.shape  # both deliver what the model takes
        n += len(images)
    return time.perf_counter() - w, time.process_time() - c, n


def _best(fn, epochs: int):
    runs = [fn() for _ in range(epochs)]
    return min(runs, key=lambda r: r[1])


def _xrv_transform():
    import torchvision
    import torchxrayvision as xrv

    return torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(SIZE)])


def nih_pair(tmp: Path, epochs: int) -> dict:
    import torchxrayvision as xrv

    from engine.data import ImageCache, NIHChestXray14, build_cache, build_transform, collate

    root = DATA_PACK / "nih"
    present = {p.name for p in (root / "images").glob("*.png")}
    meta = pd.read_csv(root / "Data_Entry_2017_v2020.csv")
    meta = meta[meta["Image Index"].isin(present)]
    csv = tmp / "nih-present.csv"
    meta.to_csv(csv, index=False)
    peer = xrv.datasets.NIH_Dataset(str(root / "images"), csvpath=str(csv), views=["PA", "AP"],
                                    unique_patients=False, transform=_xrv_transform())
    lab_plain = NIHChestXray14(root, transform=build_transform(False, size=SIZE, normalise=False))
    t0 = time.perf_counter()
    build_cache(lab_plain.frame["path"].tolist(), tmp / "nih-cache", size=256, workers=1)
    built = time.perf_counter() - t0
    lab = NIHChestXray14(root, transform=build_transform(False, size=SIZE, normalise=False),
                         cache=ImageCache(tmp / "nih-cache"))
    return {"peer": _best(lambda: _epoch(peer), epochs), "lab": _best(lambda: _epoch(lab, collate), epochs),
            "lab_decode": _best(lambda: _epoch(lab_plain, collate), epochs), "cache_build_s": built,
            "images": (len(peer), len(lab))}


def chexpert_pair(tmp: Path, epochs: int) -> dict:
    import torchxrayvision as xrv
    from PIL import Image

    from engine.constants import NIH_LABELS
    from engine.data import ImageCache, build_cache, build_transform, collate
    from engine.data.public import read_chexpert

    root = DATA_PACK / "nih"
    meta = pd.read_csv(root / "Data_Entry_2017_v2020.csv")
    meta = meta[meta["Image Index"].isin({p.name for p in (root / "images").glob("*.png")})].reset_index(drop=True)
    folder = tmp / "CheXpert-v1.0-small"
    obs = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
           "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
           "Fracture", "Support Devices"]
    shared = {"Cardiomegaly": "Cardiomegaly", "Edema": "Edema", "Consolidation": "Consolidation",
              "Pneumonia": "Pneumonia", "Atelectasis": "Atelectasis", "Pneumothorax": "Pneumothorax",
              "Pleural Effusion": "Effusion"}
    rows = []
    for k, r in meta.iterrows():
        rel = f"CheXpert-v1.0-small/train/patient{k + 1:05d}/study1/view1_frontal.jpg"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(root / "images" / r["Image Index"]).convert("L").save(tmp / rel, quality=95)  # real JPEGs
        found = set(str(r["Finding Labels"]).split("|"))
        rows.append({"Path": rel, "Sex": "Male" if r["Patient Gender"] == "M" else "Female", "Age": r["Patient Age"],
                     "Frontal/Lateral": "Frontal", "AP/PA": r["View Position"],
                     **{o: (1.0 if shared[o] in found else 0.0) if o in shared else np.nan for o in obs}})
    pd.DataFrame(rows).to_csv(folder / "train.csv", index=False)
    peer = xrv.datasets.CheX_Dataset(str(folder), csvpath=str(folder / "train.csv"), views=["PA", "AP"],
                                     unique_patients=False, transform=_xrv_transform())
    plain = read_chexpert(folder, list(NIH_LABELS), load_size=256)
    lab_plain = plain.with_transform(build_transform(False, size=SIZE, normalise=False))
    t0 = time.perf_counter()
    build_cache(plain.frame["path"].tolist(), tmp / "chexpert-cache", size=256, workers=1)
    built = time.perf_counter() - t0
    lab = read_chexpert(folder, list(NIH_LABELS), load_size=256)
    lab.cache = ImageCache(tmp / "chexpert-cache")
    lab = lab.with_transform(build_transform(False, size=SIZE, normalise=False))
    return {"peer": _best(lambda: _epoch(peer), epochs), "lab": _best(lambda: _epoch(lab, collate), epochs),
            "lab_decode": _best(lambda: _epoch(lab_plain, collate), epochs), "cache_build_s": built,
            "images": (len(peer), len(lab))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per path (the best is kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-peer-"))
    try:
        for name, fn in (("NIH", nih_pair), ("CheXpert", chexpert_pair)):
            r = fn(tmp, args.epochs)
            (pw, pc, pn), (lw, lc, ln), (dw, dc, dn) = r["peer"], r["lab"], r["lab_decode"]
            print(f"{name}: {pn} images (torchxrayvision) and {ln} (the lab), 224 px, batch 16, one thread")
            print(f"  torchxrayvision {pn / pw:7.1f} img/s, {pc:6.2f} CPU-s per epoch")
            print(f"  lab, cached     {ln / lw:7.1f} img/s, {lc:6.2f} CPU-s per epoch (cache built once: "
                  f"{r['cache_build_s']:.1f} s)")
            print(f"  lab, decoding   {dn / dw:7.1f} img/s, {dc:6.2f} CPU-s per epoch")
            print(f"  RATIO CPU-s per epoch, torchxrayvision / lab cached = {pc / lc:.1f}x; / lab decoding = "
                  f"{pc / dc:.1f}x", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
