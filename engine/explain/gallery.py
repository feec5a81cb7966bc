"""CAM galleries: for a run, split and class, the top-k images by predicted probability, each
marked true or false positive, with its maps. Selection reads the run's saved predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..runs.predictions import Predictions
from ..trust.audit import MIN_GRID
from ..constants import BACKBONE_STRIDE, feature_grid


def coarse_grid_note(image_size: int) -> str | None:
    """The one caveat of maps from a feature grid too coarse to place anything (Heatmaps, Diagnose; the
    audit and the localisation score use the same MIN_GRID), or None."""
    grid = feature_grid(image_size)
    if grid >= MIN_GRID:
        return None
    return (f"These maps come from a {grid}x{grid} feature grid ({image_size} px input): too coarse to place "
            f"anything. Each map is a blend of a few cells, its peak sits in a corner whatever the image shows, so "
            f"read them as texture, not location (train at {BACKBONE_STRIDE * MIN_GRID} px or more; 224 px gives 7x7).")


def top_k(predictions: Predictions, class_name: str, k: int = 12) -> pd.DataFrame:
    """The k images with the highest probability of `class_name`: their information columns, with
    `probability` and `outcome` TP / FP / unknown."""
    top = predictions.top(class_name, k)
    t = top.target(class_name)
    out = top.info.copy()
    out["outcome"] = np.where(np.isnan(t), "unknown", np.where(t > 0.5, "TP", "FP"))
    out["probability"] = top.prob(class_name)
    return out


def gallery_maps(loaded, rows: pd.DataFrame, class_name: str, *, method: str = "cam", scale: str = "class"):
    """(grays, maps) for the gallery rows: originals (list of (H, W) uint8) and (N, S, S) maps in
    [0, 1]. scale="class" puts every map of the gallery on one scale so they compare."""
    import torch

    from ..data.images import read_xray
    from .cam import activation_maps

    k = loaded.class_names.index(class_name)
    grays = [read_xray(p) for p in rows["path"]]
    x = torch.cat([loaded.tensor(g) for g in grays]) if grays else None
    if x is None:
        return [], np.zeros((0, loaded.image_size, loaded.image_size), np.float32)
    maps, _ = activation_maps(loaded.model, x, method=method, classes=[k], scale=scale)
    return grays, maps[:, 0].detach().cpu().numpy()
