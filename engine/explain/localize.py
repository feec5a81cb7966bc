"""Localisation of class maps against radiologists' boxes: NIH's (`BBox_List_2017.csv`, 984 boxes, 8
classes) and RSNA Pneumonia Detection's (`stage_2_train_labels.csv`: one row per pneumonia box).

Pointing game: the map's maximum falls inside the box. IoU: the map thresholded at a fraction of
its maximum vs the box. Box coordinates are in the 1024x1024 pixel space of the NIH PNGs (RSNA's
DICOMs are the same NIH films at 1024 px) and are rescaled to the image actually on disk (the data
pack's copies are 512 px).
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..trust.audit import MIN_GRID
from ..constants import BOX_FORMATS, feature_grid

NIH_BOX_SPACE = 1024.0
LABEL_ALIASES = {"Infiltrate": "Infiltration"}  # the box file's spelling -> the label order's


def read_bbox_list(path) -> tuple[pd.DataFrame, int]:
    """(frame with image, label, x, y, w, h in 1024-px space; rows skipped as malformed)."""
    rows, bad = [], 0
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0].strip() != "Image Index":
            raise ValueError(f"{path}: not an NIH BBox_List file (header {header[:2] if header else None})")
        for rec in reader:
            try:
                image, label = rec[0].strip(), rec[1].strip()
                x, y, w, h = (float(v) for v in rec[2:6])
                if not image or w <= 0 or h <= 0:
                    raise ValueError
            except (IndexError, ValueError):
                bad += 1
                continue
            rows.append((image, LABEL_ALIASES.get(label, label), x, y, w, h))
    return pd.DataFrame(rows, columns=["image", "label", "x", "y", "w", "h"]), bad


RSNA_LABELS = ("stage_2_train_labels.csv", "stage_1_train_labels.csv")
RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def read_rsna_boxes(root) -> tuple[pd.DataFrame, int]:
    """RSNA Pneumonia's boxes under `root`: (frame with image, label, x, y, w, h; rows skipped as
    malformed). `image` is the DICOM's path under root (stage_2_train_images/<patientId>.dcm), as the
    RSNA reader (engine.data.public.read_rsna) names it; rows of Target 0 carry no box."""
    root = Path(root)
    path = next((root / n for n in RSNA_LABELS if (root / n).is_file()), None)
    if path is None:
        raise ValueError(f"{root} holds no {RSNA_LABELS[0]}: pass the RSNA Pneumonia folder")
    images = "stage_2_train_images" if (root / "stage_2_train_images").is_dir() else "stage_1_train_images"
    rows, bad = [], 0
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        if not set(RSNA_COLUMNS) <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: not RSNA Pneumonia's labels (columns {', '.join(RSNA_COLUMNS)})")
        for rec in reader:
            try:
                if rec["Target"].strip() in ("0", "0.0"):
                    continue
                x, y, w, h = (float(rec[k]) for k in ("x", "y", "width", "height"))
                if rec["Target"].strip() not in ("1", "1.0") or not rec["patientId"].strip() or w <= 0 or h <= 0:
                    raise ValueError
            except (AttributeError, ValueError):
                bad += 1
                continue
            rows.append((f"{images}/{rec['patientId'].strip()}.dcm", "Pneumonia", x, y, w, h))
    return pd.DataFrame(rows, columns=["image", "label", "x", "y", "w", "h"]), bad


def read_boxes(root, fmt: str = "nih") -> tuple[pd.DataFrame, int]:
    """The boxes of a collection in its published layout: NIH's list or RSNA's labels."""
    if fmt == "rsna":
        return read_rsna_boxes(root)
    if fmt != "nih":
        raise ValueError(f"no boxes in the {fmt!r} layout; boxes come with: {', '.join(BOX_FORMATS)}")
    return read_bbox_list(Path(root) / "BBox_List_2017.csv")


def box_mask(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = shape
    x0, y0, bw, bh = box
    m = np.zeros((h, w), bool)
    m[max(0, int(np.floor(y0))):min(h, int(np.ceil(y0 + bh))),
      max(0, int(np.floor(x0))):min(w, int(np.ceil(x0 + bw)))] = True
    return m


def pointing_hit(cam: np.ndarray, box) -> bool:
    """cam (H, W) in the box's pixel space: is its (first) maximum inside the box?"""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(box_mask(cam.shape, box)[y, x])


def box_iou(cam: np.ndarray, box, threshold: float = 0.5) -> float:
    """IoU between {cam >= threshold * max(cam)} and the box."""
    peak = float(cam.max())
    pred = cam >= threshold * peak if peak > 0 else np.zeros(cam.shape, bool)
    gt = box_mask(cam.shape, box)
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 0.0


def summarise(records: pd.DataFrame) -> dict:
    """Per class and overall: boxes, pointing-game hit rate, mean IoU."""
    out = {}
    for label, g in records.groupby("label"):
        out[label] = {"boxes": int(len(g)), "pointing": float(g["hit"].mean()), "iou": float(g["iou"].mean())}
    out["overall"] = {"boxes": int(len(records)), "pointing": float(records["hit"].mean()) if len(records) else None,
                      "iou": float(records["iou"].mean()) if len(records) else None}
    return out


def localize(loaded, root, *, fmt: str = "nih", method: str = "cam", threshold: float = 0.5, progress=None) -> dict:
    """Run `loaded` (inference.LoadedModel) over every boxed image present under `root`, a ChestX-ray14
    root (fmt "nih") or an RSNA Pneumonia folder ("rsna")."""
    from ..data.images import ImageReadError, read_xray
    from ..data.nih import index_images
    from .cam import activation_maps

    root = Path(root)
    boxes, bad = read_boxes(root, fmt)
    if fmt == "nih":
        index = index_images(root)
    else:
        index = {i: root / i for i in boxes["image"].unique() if (root / i).is_file()}
    present = boxes[boxes["image"].isin(index.keys())]
    known = present[present["label"].isin(loaded.class_names)]
    grid = feature_grid(loaded.image_size)
    if grid < MIN_GRID:  # every peak would sit in a corner cell: a score of 0 would say nothing of the model
        return {"format": fmt, "method": method, "threshold": threshold, "boxes_in_file": int(len(boxes) + bad),
                "malformed_rows": bad, "boxes_with_image": int(len(present)), "boxes_evaluated": 0, "unreadable": [],
                "per_class": {},
                "too_coarse": f"the maps come from a {grid}x{grid} feature grid ({loaded.image_size} px input): too "
                              f"coarse to place anything, so the {len(known)} boxes are not scored (train at "
                              f"{32 * MIN_GRID} px or more)"}
    recs, unreadable = [], []
    for k, (image, group) in enumerate(known.groupby("image")):
        try:
            gray = read_xray(index[image])
        except ImageReadError as exc:
            unreadable.append(str(exc))
            continue
        classes = [loaded.class_names.index(lab) for lab in group["label"]]
        maps, _ = activation_maps(loaded.model, loaded.tensor(gray), method=method, classes=sorted(set(classes)))
        by_class = {c: maps[0, i].detach().cpu().numpy() for i, c in enumerate(sorted(set(classes)))}
        h, w = gray.shape
        sx, sy = w / NIH_BOX_SPACE, h / NIH_BOX_SPACE
        for (_, b), c in zip(group.iterrows(), classes):
            cam = cv2.resize(by_class[c], (w, h), interpolation=cv2.INTER_LINEAR)
            box = (b.x * sx, b.y * sy, b.w * sx, b.h * sy)
            recs.append({"image": image, "label": b.label, "hit": pointing_hit(cam, box),
                         "iou": box_iou(cam, box, threshold)})
        if progress:
            progress(k + 1, known["image"].nunique())
    records = pd.DataFrame(recs, columns=["image", "label", "hit", "iou"])
    return {"format": fmt, "method": method, "threshold": threshold, "boxes_in_file": int(len(boxes) + bad),
            "malformed_rows": bad, "boxes_with_image": int(len(present)), "boxes_evaluated": int(len(records)),
            "unreadable": unreadable, "per_class": summarise(records), "too_coarse": None}
