"""The audit's rules: its thresholds and the geometry they read (the border band, the lung field,
corner focus, blanking), with the words each rule is said in."""
from __future__ import annotations

import numpy as np

MIN_GRID = 3          # corner focus: a corner cell apart from the centre
MIN_BAND_GRID = 7     # band shares: cells of 1/7 of the side (224 px), near the band's width
BORDER = 0.10
LUNG_BOX = (0.10, 0.10, 0.90, 0.85)  # x0, y0, x1, y1 as fractions of the side
BORDER_FLAG = 0.5
OUTSIDE_FLAG = 0.6
SOURCE_FLAG, LABEL_FROM_SOURCE_FLAG = 0.9, 0.8
SKEW_FLAG = 0.5       # a source whose positive rate differs from the others' by this much
DROP_FLAG = 0.1
CORNER_FLAG = 2.0     # x the corner cell's area share
OCCLUSION_FLAG = 0.2  # mean fall in the class probability of true positives
PATCH, PATCH_STRIDE = 0.25, 0.125  # the sliding occlusion: a square a quarter of the side, every eighth (7x7 places)
PATCH_RATIO_FLAG = 3.0     # the worst place's mean fall against the median place's
PATCH_CONSISTENCY_FLAG = 0.5  # share of true positives whose own worst place is that one
MIN_TP = 3  # the map and occlusion rules read classes with this many true positives or more
MARK_RULES = {  # each model-based rule in words, beside the thresholds it reads: the Audit page's legend
    "border": f"border share ≥ {BORDER_FLAG}",
    "outside_lung": f"outside-lung share ≥ {OUTSIDE_FLAG}",
    "corner_focus": f"corner focus ≥ {CORNER_FLAG:g}x",
    "drop_border_blanked": f"a border drop ≥ {OCCLUSION_FLAG} and at least twice the centre's",
    "patch": (f"one fixed place whose blanking drops it ≥ {OCCLUSION_FLAG}, {PATCH_RATIO_FLAG:g}x the typical place, "
              f"on at least {PATCH_CONSISTENCY_FLAG:.0%} of the images"),
}
MIN_SOURCE = 15
PROBE_DIMS = 64       # the probe works on the first principal components of the standardised features
COLLECTION_NAMES = {"nih": "ChestX-ray14", "covid": "COVID-19 collection"}


def region_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(border band, outside the lung field) boolean masks of a size x size image."""
    c = (np.arange(size) + 0.5) / size
    xx, yy = np.meshgrid(c, c)
    border = (xx < BORDER) | (xx > 1 - BORDER) | (yy < BORDER) | (yy > 1 - BORDER)
    x0, y0, x1, y1 = LUNG_BOX
    outside = ~((xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1))
    return border, outside


def map_shares(cam: np.ndarray, size: int) -> dict:
    """Shares of a raw CAM's positive mass in the border band and outside the lung field."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.clip(cam, 0, None)[None, None].astype(np.float32))
    up = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    total = float(up.sum())
    if total <= 0:
        return {"border": None, "outside_lung": None}
    border, outside = region_masks(size)
    return {"border": float(up[border].sum() / total), "outside_lung": float(up[outside].sum() / total)}



def corner_focus(cam: np.ndarray) -> float | None:
    """The largest share of a raw CAM's positive mass in one corner cell of the feature grid, divided
    by that cell's share of the area (1 = even, g*g = all of it in one corner)."""
    m = np.clip(cam, 0, None)
    total = float(m.sum())
    if total <= 0 or min(m.shape) < MIN_GRID:
        return None
    corners = [m[0, 0], m[0, -1], m[-1, 0], m[-1, -1]]
    return float(max(corners) / total * m.size)


def blank(gray: np.ndarray, region: str) -> np.ndarray:
    """A copy of a grayscale image with the border band, or a centred box of the same area, set to
    the image's median (the occlusion test)."""
    size = gray.shape[0]
    out = gray.copy()
    border, _ = region_masks(size)
    if region == "border":
        out[border] = np.median(gray)
        return out
    side = np.sqrt(border.mean())
    lo, hi = int(round(size * (1 - side) / 2)), int(round(size * (1 + side) / 2))
    out[lo:hi, lo:hi] = np.median(gray)
    return out



REASONS = {"border": "map mass at the border", "outside_lung": "", "corner_focus": "map mass in one corner",
           "drop_border_blanked": "blanking the border changes the prediction more than blanking the centre",
           "patch": "blanking one fixed place lowers the prediction far more than blanking any typical place"}
