"""A run's landscape data: the image selection, its features and pixels, cached in the run folder.

Cached as `checkpoints/<run>/landscape/<key>.npz` + `.csv`, the key a hash of the checkpoint (path,
size, mtime) and of the selection settings, so a retrained model or other data recomputes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..runs.tables import write_csv
from ..data.images import ImageReadError, read_xray
from ..data.roots import DataRootError, resolve_root
from ..data.tasks import open_collection
from ..explain.inference import LoadedModel
from ..runs.folder import best_checkpoint
from .embeddings import extract_features, pixel_features, select_images


@dataclass
class Landscape:
    frame: pd.DataFrame        # one row per image: path, image, dataset, split, label, ...
    features: np.ndarray       # (N, K) pooled final-layer features
    pixels: np.ndarray         # (N, P) raw-pixel baseline
    key: str
    unreadable: int = 0        # selected images whose file could not be decoded (left out)

    def space(self, name: str) -> np.ndarray:
        if name == "features":
            return self.features
        if name == "pixels":
            return self.pixels
        raise ValueError(f"unknown space {name!r}; allowed: features, pixels")


def _roots(config: dict, nih_root, covid_root) -> tuple[str | None, str | None]:
    """The given roots, else the run's recorded ones, else the environment's; at least one."""
    d = config.get("data", {})
    nih = resolve_root("nih", nih_root, d.get("nih_root"), required=False)
    cov = resolve_root("covid", covid_root, d.get("covid_root"), required=False)
    if not nih and not cov:
        raise DataRootError("nih", "no data roots: pass --nih-root / --covid-root (the run recorded none)")
    return (str(nih) if nih else None), (str(cov) if cov else None)  # strings key the cache


def _locate(run_dir, config: dict, nih_root, covid_root, split, per_label, seed, pixel_size):
    run_dir = Path(run_dir)
    ckpt = best_checkpoint(run_dir)
    nih, cov = _roots(config, nih_root, covid_root)
    st = ckpt.stat()
    settings = {"ckpt": str(ckpt), "size": st.st_size, "mtime": st.st_mtime_ns, "nih": nih, "covid": cov,
                "split": split, "per_label": per_label, "seed": seed, "pixel_size": pixel_size}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = run_dir / "landscape"
    return ckpt, nih, cov, key, folder, folder / f"{key}.npz", folder / f"{key}.csv"


def landscape_ready(run_dir, config: dict, *, nih_root=None, covid_root=None, split: str | None = None,
                    per_label: int = 80, seed: int = 0, pixel_size: int = 32) -> bool:
    """Whether these settings' landscape is cached in the run folder (loading it is then quick)."""
    *_, arrays, table = _locate(run_dir, config, nih_root, covid_root, split, per_label, seed, pixel_size)
    return arrays.is_file() and table.is_file()


def load_landscape(run_dir, config: dict, *, nih_root=None, covid_root=None, split: str | None = None,
                   per_label: int = 80, seed: int = 0, pixel_size: int = 32, progress=None,
                   on_stage=None) -> Landscape:
    """The selection, features and pixels of the run whose folder is `run_dir` (recorded config
    `config`), cached in `run_dir/landscape/`. A build goes through stages, each announced by
    on_stage(text): selecting images, reading them, loading the model, running it, saving;
    progress(done, total) counts the images of the reading and the model stages, each from 0."""
    say = on_stage or (lambda text: None)
    ckpt, nih, cov, key, folder, arrays, table = _locate(run_dir, config, nih_root, covid_root, split, per_label,
                                                         seed, pixel_size)
    if arrays.is_file() and table.is_file():
        with np.load(arrays) as z:
            unreadable = int(z["unreadable"]) if "unreadable" in z.files else 0
            return Landscape(pd.read_csv(table, keep_default_na=False), z["features"], z["pixels"], key, unreadable)
    say("selecting images")
    frame = select_images(open_collection("nih", nih) if nih else None,
                          open_collection("covid", cov, labelled_only=False) if cov else None,
                          split=split, per_label=per_label, seed=seed)
    n = len(frame)
    say(f"reading {n} images")
    grays, keep = [], []
    for i, p in enumerate(frame["path"]):
        try:
            grays.append(read_xray(p))
            keep.append(i)
        except ImageReadError:
            pass
        if progress and ((i + 1) % 20 == 0 or i + 1 == n):
            progress(i + 1, n)
    unreadable = n - len(keep)
    frame = frame.iloc[keep].reset_index(drop=True)
    say("loading the model")
    loaded = LoadedModel(ckpt)
    say(f"running the model on {len(grays)} images")
    features = extract_features(loaded, grays, progress=progress)
    say("saving the landscape in the run folder")
    pixels = pixel_features(grays, pixel_size)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{key}.tmp.npz"
    np.savez(tmp, features=features, pixels=pixels, unreadable=np.array(unreadable))
    os.replace(tmp, arrays)
    write_csv(frame, table)  # the lab's one CSV writer: no cell can run as a spreadsheet formula
    prune_cache(run_dir, keep=KEEP_CACHED)
    return Landscape(frame, features, pixels, key, unreadable)


KEEP_CACHED = 4  # landscapes (settings) kept per run; older ones are removed when a new one is built


def cache_entries(run_dir) -> list[tuple[str, int, float]]:
    """(key, bytes, mtime) of the landscapes cached in a run folder, newest first."""
    folder = Path(run_dir) / "landscape"
    out = []
    for npz in folder.glob("*.npz") if folder.is_dir() else []:
        if ".tmp" in npz.name:
            continue
        files = [npz, npz.with_suffix(".csv")]
        out.append((npz.stem, sum(f.stat().st_size for f in files if f.is_file()), npz.stat().st_mtime))
    return sorted(out, key=lambda e: -e[2])


def prune_cache(run_dir, keep: int = KEEP_CACHED) -> int:
    """Remove all but the `keep` newest cached landscapes of a run (keep=0 clears); bytes freed."""
    folder = Path(run_dir) / "landscape"
    freed = 0
    for key, size, _ in cache_entries(run_dir)[keep:]:
        for f in (folder / f"{key}.npz", folder / f"{key}.csv"):
            f.unlink(missing_ok=True)
        freed += size
    for tmp in folder.glob("*.tmp*") if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)
    return freed
