"""The Landscape in TensorBoard's embedding projector: a run's pooled features (or the raw-pixel
baseline) with one metadata row per image (label, dataset, source, split, image) and a sprite of the
images' thumbnails, written under DIR/<run>-landscape. `tensorboard --logdir DIR`, tab Projector,
then shows COVID-19's neighbours with PCA, t-SNE or UMAP, coloured by any metadata column."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .tensorboard import _writer

COLUMNS = ("label", "dataset", "source", "split", "image")
THUMB = 32  # sprite cells in px; TensorBoard's sprite holds at most 8192 x 8192 px: 65,536 images


def _cell(text) -> str:
    """A metadata cell: TensorBoard's TSV has no quoting, so tabs and line ends become spaces."""
    return " ".join(str(text).split()) or "-"


def write_projector(landscape, logdir, run: str) -> dict:
    """Write the landscape's features and its raw-pixel baseline for the projector, in DIR/<run>-landscape
    (rewritten: writing again replaces what was there); returns where and how many."""
    import shutil

    import torch

    frame = landscape.frame
    n = len(frame)
    if n == 0:
        raise ValueError(f"run {run}: the landscape has no readable image to project")
    if n > (8192 // THUMB) ** 2:
        raise ValueError(f"{n:,} images exceed the projector's sprite ({(8192 // THUMB) ** 2:,}); "
                         f"select fewer (--per-label)")
    meta = [[_cell(frame[c].iat[i] if c in frame else (frame["dataset"].iat[i] if c == "source" else "-"))
             for c in COLUMNS] for i in range(n)]
    side = int(round(np.sqrt(landscape.pixels.shape[1])))
    thumbs = torch.from_numpy(landscape.pixels.reshape(-1, 1, side, side).astype(np.float32))
    if side != THUMB:
        thumbs = torch.nn.functional.interpolate(thumbs, size=(THUMB, THUMB), mode="bilinear", align_corners=False)
    thumbs = thumbs.repeat(1, 3, 1, 1)
    folder = Path(logdir) / f"{run}-landscape"
    if folder.is_dir():
        shutil.rmtree(folder)
    writer = _writer(folder)
    try:  # one writer: its projector_config.pbtxt lists both tensors
        for space in ("features", "pixels"):
            x = torch.from_numpy(np.asarray(landscape.space(space), dtype=np.float32))
            writer.add_embedding(x, metadata=meta, metadata_header=list(COLUMNS), label_img=thumbs,
                                 tag=f"{run}/{space}")
    finally:
        writer.close()
    return {"projector": str(folder), "images": n, "dimensions": int(landscape.features.shape[1]),
            "labels": sorted(set(frame["label"]))}
