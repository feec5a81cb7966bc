"""The base class shared by the NIH, COVID-19 and combined datasets.

Like torchxrayvision's datasets, labels and metadata are built eagerly (a row-aligned DataFrame
and an (N, C) float32 target matrix, NaN = unknown) and pixels are read lazily, from the
preprocessed cache when one is attached, else from the source file.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from ..constants import DEFAULT_CACHE_SIZE, SPLITS
from .images import ImageReadError, read_xray, resize_gray


def sample_seed(augment_seed: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch: a function of (run seed, epoch, image) only,
    never of the order, the loader worker or the batches drawn before. So a run stopped mid-epoch and
    resumed augments every remaining image exactly as the run that never stopped does."""
    return (augment_seed * 1_000_033 + index) % (2 ** 63 - 1)


class XrayDataset:
    """Images + multi-hot targets: a map-style dataset for torch's DataLoader (torch itself is imported
    only when pixels are read, so metadata and summaries load without it).

    frame: one row per image with at least `image`, `path`, `patient_id`, `split`, `dataset`.
    targets: (N, C) float32; 1 positive, 0 negative, NaN unknown (masked out of the loss).
    skipped: counts of rows left out while loading (missing files, unknown labels, ...).
    `__getitem__` returns {"image": (3, S, S) float32, "target": (C,), "index": int}; a file that
    cannot be decoded yields {"error": message, "index": int}, which `collate` drops and reports.
    """

    name = "xray"

    def __init__(self, frame: pd.DataFrame, targets: np.ndarray, class_names: Sequence[str], *,
                 transform: Callable | None = None, load_size: int = DEFAULT_CACHE_SIZE, cache=None,
                 skipped: dict | None = None):
        if len(frame) != len(targets):
            raise ValueError(f"frame has {len(frame)} rows but targets has {len(targets)}")
        self.frame = frame.reset_index(drop=True)
        self.targets = np.asarray(targets, dtype=np.float32).reshape(len(frame), len(class_names))
        self.class_names = tuple(class_names)
        self.transform = transform
        self.load_size = int(load_size)
        self.cache = cache
        self.skipped = dict(skipped or {})
        self.augment_seed: int | None = None  # see sample_seed: set by the trainer each epoch

    # -- selection -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    def select(self, mask_or_index) -> "XrayDataset":
        """A copy holding only the chosen rows (boolean mask or integer index)."""
        idx = np.asarray(mask_or_index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        new = copy.copy(self)
        new.frame = self.frame.iloc[idx].reset_index(drop=True)
        new.targets = self.targets[idx]
        return new

    def split(self, name: str) -> "XrayDataset":
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")
        return self.select(self.frame["split"].to_numpy() == name)

    def with_transform(self, transform: Callable | None) -> "XrayDataset":
        new = copy.copy(self)
        new.transform = transform
        return new

    def attach_cache(self, cache) -> "XrayDataset":
        self.cache = cache
        return self

    # -- pixels ----------------------------------------------------------------------------
    def read_gray(self, i: int) -> np.ndarray:
        """Grayscale uint8 (load_size, load_size) for row i; raises ImageReadError."""
        path = self.frame.at[i, "path"]
        if self.cache is not None:
            pixels = self.cache.get(path)
            if pixels is not None:
                return pixels
        return resize_gray(read_xray(path), self.load_size)

    def read_original(self, i: int) -> np.ndarray:
        """The full-resolution grayscale image of row i (for CAM overlays)."""
        return read_xray(self.frame.at[i, "path"])

    def __getitem__(self, i: int) -> dict:
        import torch

        i = int(i)
        try:
            gray = self.read_gray(i)
        except ImageReadError as exc:
            return {"error": str(exc), "index": i}
        if self.transform is not None and self.augment_seed is not None:
            with torch.random.fork_rng(devices=[]):  # the caller's own random stream is left as it was
                torch.manual_seed(sample_seed(self.augment_seed, i))
                img = self.transform(gray)
        elif self.transform is not None:
            img = self.transform(gray)
        else:
            img = torch.from_numpy(np.ascontiguousarray(gray)).unsqueeze(0)
        return {"image": img, "target": torch.from_numpy(self.targets[i].copy()), "index": i}

    # -- summaries -------------------------------------------------------------------------
    def label_counts(self) -> dict[str, int]:
        """Positives per class (NaN counts as not positive)."""
        t = np.nan_to_num(self.targets, nan=0.0)
        return {c: int(t[:, k].sum()) for k, c in enumerate(self.class_names)}

    def split_counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for s in SPLITS:
            m = self.frame["split"].to_numpy() == s
            out[s] = {"images": int(m.sum()), "patients": int(self.frame.loc[m, "patient_id"].nunique())}
        return out

    def fingerprint(self) -> str:
        """A short hash of image names, splits and targets: changes whenever the data does."""
        h = hashlib.sha256()
        h.update("|".join(self.class_names).encode())
        h.update("\n".join(self.frame["image"].astype(str) + ":" + self.frame["split"].astype(str)).encode())
        h.update(np.nan_to_num(self.targets, nan=-1).astype(np.int8).tobytes())
        return h.hexdigest()[:16]


def collate(batch: list[dict]) -> dict:
    """Stack good samples; unreadable ones are dropped and listed under "errors"."""
    import torch

    good = [b for b in batch if "error" not in b]
    errors = [b["error"] for b in batch if "error" in b]
    if not good:
        return {"images": None, "targets": None, "indices": torch.empty(0, dtype=torch.long), "errors": errors}
    return {
        "images": torch.stack([b["image"] for b in good]),
        "targets": torch.stack([b["target"] for b in good]),
        "indices": torch.tensor([b["index"] for b in good], dtype=torch.long),
        "errors": errors,
    }
