"""Is this film one of a run's own images? (issue 37, N6). A prediction on an image the model was
trained or validated on says little about how it does on new films; Diagnose says so.

A film picked from a dataset is matched by its file; an uploaded film by its perceptual hash, confirmed
by its pixels, against every image of the run's splits (the rule of the duplicate check and of the
external evaluation's overlap: engine.data.duplicates). Hashes are cached by file, so only the first
check of a run reads all of its images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SPLIT_ORDER = ("train", "val", "test")


def run_frames(cfg) -> "pd.DataFrame":  # noqa: F821 (pandas, imported by tasks)
    """One row per image of the run's train, val and test splits: path, image, split."""
    import pandas as pd

    from .tasks import build_datasets

    datasets = build_datasets(cfg)
    return pd.concat([datasets[s].frame[["path", "image"]].assign(split=s) for s in SPLIT_ORDER if s in datasets],
                     ignore_index=True)


def by_path(frame, path) -> dict | None:
    """The run's image at `path` (same file), or None."""
    paths = frame["path"].astype(str)
    hit = frame[paths == str(path)]
    if hit.empty:  # the same file under another spelling of its folder: same name, then os.path.samefile
        same_name = frame[paths.map(os.path.basename) == os.path.basename(str(path))]
        hit = same_name[[_same(p, path) for p in same_name["path"]]]
    if hit.empty:
        return None
    r = hit.iloc[0]
    return {"split": str(r["split"]), "image": str(r["image"]), "how": "the same file"}


def _same(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def by_pixels(frame, gray: np.ndarray, *, cache_dir=None, progress=None, notice=None) -> dict | None:
    """The run's image that is the same film as `gray` (pHash within the duplicate rule's distance,
    confirmed by the pixel correlation), or None."""
    import tempfile

    from PIL import Image

    from .duplicates import confirm_pairs, cross_pairs, image_hashes, phash

    paths = frame["path"].astype(str).tolist()
    hashes, _ = image_hashes(paths, cache_dir=cache_dir, progress=progress, notice=notice)
    candidates = cross_pairs([phash(gray)], hashes)
    if not candidates:
        return None
    with tempfile.TemporaryDirectory(prefix="cxr-film-") as tmp:  # confirm_pairs reads files
        probe = Path(tmp) / "film.png"
        Image.fromarray(gray).save(probe)
        confirmed, _ = confirm_pairs([str(probe)], paths, candidates)
    if not confirmed:
        return None
    _, j, distance, corr = min(confirmed, key=lambda c: c[2])
    r = frame.iloc[j]
    return {"split": str(r["split"]), "image": str(r["image"]),
            "how": f"the same film (hash distance {distance}, pixel correlation {corr:.3f})"}


def caveat(match: dict | None, run: str) -> str | None:
    """What Diagnose says of a film that is one of the run's own images."""
    if not match:
        return None
    role = {"train": "trained on", "val": "validated on (it chose the best epoch with it)",
            "test": "tested on"}[match["split"]]
    return (f"This film is one of the images {run} was {role}: {match['image']}, {match['how']}. "
            + ("Its prediction says little about new films." if match["split"] != "test" else
               "Its prediction is part of the run's test AUC, not a new case."))
