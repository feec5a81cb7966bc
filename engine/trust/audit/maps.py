"""Where the model looks: CAM shares, corner focus, blanking the border or the centre, and the sliding
occlusion that finds one fixed place deciding the prediction."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...runs.predictions import Predictions
from ...constants import feature_grid
from . import model
from .probe import _grays
from .rules import (BORDER_FLAG, CORNER_FLAG, MIN_BAND_GRID, MIN_GRID, MIN_TP, OCCLUSION_FLAG, OUTSIDE_FLAG, PATCH,
                    PATCH_CONSISTENCY_FLAG, PATCH_RATIO_FLAG, PATCH_STRIDE, REASONS, blank, corner_focus, map_shares,
                    region_masks)


def patch_windows(size: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of the sliding occlusion's squares: PATCH of the side, every PATCH_STRIDE, so
    any mark up to half a square wide lies whole inside one of them, wherever it is."""
    side, step = int(round(PATCH * size)), max(1, int(round(PATCH_STRIDE * size)))
    starts = list(range(0, size - side + 1, step))
    return [(y, y + side, x, x + side) for y in starts for x in starts]


def fixed_patch(loaded, grays: list, probs: np.ndarray, k: int) -> dict | None:
    """The sliding occlusion on true positives: each square blanked to the image's median in turn.
    A marker (anywhere: a corner, the border or mid-field) is one place whose blanking lowers the
    probability on most images, far more than the typical place; a disease moves from image to image
    and spreads over several squares. Returns the worst place's mean fall, the median place's, their
    ratio, the share of images whose own worst place it is, and where it is (fractions of the side)."""
    if len(grays) < 3:
        return None
    size = grays[0].shape[0]
    wins = patch_windows(size)
    drops = np.zeros((len(grays), len(wins)))
    for i, g in enumerate(grays):
        med = np.median(g)
        copies = []
        for y0, y1, x0, x1 in wins:
            c = g.copy()
            c[y0:y1, x0:x1] = med
            copies.append(c)
        _, p, _ = model.forward(loaded, copies)
        drops[i] = probs[i, k] - p[:, k]
    mean = drops.mean(axis=0)
    best = int(mean.argmax())
    median = float(np.median(mean))
    y0, y1, x0, x1 = wins[best]
    return {"drop": float(mean[best]), "median": median, "ratio": float(mean[best] / max(median, 0.01)),
            "consistency": float((drops.argmax(axis=1) == best).mean()), "images": len(grays), "places": len(wins),
            "where": [x0 / size, y0 / size, x1 / size, y1 / size]}


def cam_evidence(loaded, test_ds, predictions: Predictions, classes: list[str], top_k: int, progress=None) -> dict:
    """Where the model looks on the top_k most confident test images of each class (see module doc):
    CAM shares in the border band and outside the lung field (grids of MIN_BAND_GRID and up), the
    corner focus (grids of MIN_GRID and up), and the occlusion test (any grid)."""
    size = loaded.image_size
    grid = feature_grid(size)
    border, outside = region_masks(size)
    out = {"grid": grid, "image_size": size, "border_area": float(border.mean()), "outside_area": float(outside.mean()),
           "classes": {}, "too_coarse": None, "band_too_coarse": None}
    if grid < MIN_GRID:
        out["too_coarse"] = (f"the last feature map is {grid}x{grid} at {size} px: too coarse to place anything, so "
                             "the maps are not scored (train at 96 px or more); the occlusion test still runs")
    elif grid < MIN_BAND_GRID:
        out["band_too_coarse"] = (f"a {grid}x{grid} feature map cannot put mass in a band 10 % wide, so the band and "
                                  f"lung-field shares are not scored (they need {MIN_BAND_GRID}x{MIN_BAND_GRID}, "
                                  f"{32 * MIN_BAND_GRID} px); corner focus and occlusion are")
    index = {p: k for k, p in enumerate(test_ds.frame["path"])}
    for n_done, c in enumerate(classes):
        if progress:
            progress(f"maps and occlusion of the top {top_k} test images per class ({c})", n_done, len(classes))
        if not predictions.has(c):
            continue
        top = predictions.top(c, top_k, labelled_only=True)
        rows = [index[x] for x in top.column("path") if x in index]
        grays, ok = _grays(test_ds, rows, [])
        if not grays:
            continue
        k = loaded.class_names.index(c)
        grays = [loaded_gray(loaded, g) for g in grays]
        _, probs, cams = model.forward(loaded, grays)
        _, p_border, _ = model.forward(loaded, [blank(g, "border") for g in grays])
        _, p_centre, _ = model.forward(loaded, [blank(g, "centre") for g in grays])
        recs = []
        for j, i in enumerate(ok):
            target = float(test_ds.targets[i, list(test_ds.class_names).index(c)])
            shares = map_shares(cams[j, k], size) if grid >= MIN_BAND_GRID else {"border": None, "outside_lung": None}
            recs.append({"image": test_ds.frame.at[i, "image"], "kind": "TP" if target == 1 else "FP",
                         "prob": float(probs[j, k]), **shares,
                         "corner_focus": corner_focus(cams[j, k]) if grid >= MIN_GRID else None,
                         "drop_border_blanked": float(probs[j, k] - p_border[j, k]),
                         "drop_centre_blanked": float(probs[j, k] - p_centre[j, k])})
        df = pd.DataFrame(recs)
        summary = {}
        for kind in ("TP", "FP"):
            d = df[df["kind"] == kind]
            summary[kind] = {"maps": int(len(d)), **{m: _mean(d[m]) for m in
                             ("border", "outside_lung", "corner_focus", "drop_border_blanked", "drop_centre_blanked")}}
        tp = summary["TP"]
        tp_rows = [j for j, r in enumerate(recs) if r["kind"] == "TP"]
        patch = fixed_patch(loaded, [grays[j] for j in tp_rows], probs[tp_rows], k) if len(tp_rows) >= MIN_TP else None
        tp["patch"] = patch
        counted = tp["maps"] >= MIN_TP
        db, dc = tp["drop_border_blanked"] or 0, tp["drop_centre_blanked"] or 0
        marks = {"border": counted and (tp["border"] or 0) >= BORDER_FLAG,
                 "outside_lung": counted and (tp["outside_lung"] or 0) >= OUTSIDE_FLAG,
                 "corner_focus": counted and (tp["corner_focus"] or 0) >= CORNER_FLAG,
                 "drop_border_blanked": counted and db >= OCCLUSION_FLAG and db >= 2 * max(dc, 0),
                 "patch": bool(patch and patch["drop"] >= OCCLUSION_FLAG and patch["ratio"] >= PATCH_RATIO_FLAG
                               and patch["consistency"] >= PATCH_CONSISTENCY_FLAG)}
        reasons = [why for key, why in REASONS.items() if marks[key] and why]
        if (marks["border"] or marks["outside_lung"]) and "map mass at the border" not in reasons:
            reasons.insert(0, "map mass at the border")
        out["classes"][c] = {**summary, "images": recs, "flag": bool(reasons), "reasons": reasons, "marks": marks}
    return out


def loaded_gray(loaded, gray: np.ndarray) -> np.ndarray:
    """A grayscale image at the network's input side (what the occlusion test blanks)."""
    from ...data.images import resize_gray

    return resize_gray(resize_gray(gray, loaded.load_size), loaded.image_size)


def _mean(s) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


