"""The shortcut audit: is a run reading the disease, or the source of the image?

COVID-19 classifiers trained on positives from one source and negatives from another learn the
source (scanner, text markers, panel letters, borders) and fail in a new hospital (DeGrave, Janizek
and Lee, Nature Machine Intelligence 2021). The audit gathers three kinds of evidence and says in
plain words what they show; it never reduces them to one score.

1. Source predictability. A cross-validated linear probe (standardised features, their first 64
   principal components, L2 logistic regression, 5 folds grouped by patient) predicts each image's source from the run's pooled
   features: ChestX-ray14 vs the COVID-19 collection, and within the collection its origin (the web
   host of the `url` column: radiopaedia.org, sirm.org, a journal; origins with fewer than
   `MIN_SOURCE` images in the sample are pooled as "other"). Source AUC near 1 means the features
   carry the source. That alone is no fault; it becomes one when the source also gives the label
   away, measured as the AUC of the source's own positive rate as a score for the label ("label
   from source"). The same probe on 32x32 raw pixels says how visible the source is without any model.
2. Where the model looks. For each class, the run's `top_k` most confident test images; on each,
   the class's CAM (M_c = sum_k w_ck f_k, positive part, upsampled bilinearly to the input) is
   split into mass inside the **border band** (the outer 10 % of each side, 36 % of the area,
   where markers, text and panel letters sit) and mass **outside the central lung field** (outside
   the box x 10-90 %, y 10-85 % of the image, 40 % of the area). Shares are compared between true
   and false positives. A feature grid under 3x3 (a 64-px ResNet/DenseNet has 2x2) cannot place
   anything, and is reported as too coarse instead of scored.
3. Internal vs external. The drop from the internal test AUC to each external evaluation of the run
   (engine.runs.external), with the external interval.

A finding is raised when: the border share of true positives' maps is at least `BORDER_FLAG` (0.5,
against 0.36 for a map spread evenly); the source probe's AUC is at least 0.9 while the label from
source is at least 0.8; or an external AUC is at least 0.1 below the internal one with its whole
interval below it. Small samples are said to be small.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ..config import ExperimentConfig
from ..data.roots import resolve_root
from ..runs.details import headline_class
from ..runs.folder import AUDIT, write_json
from ..runs.predictions import Predictions, read_if_present
from ..text import estimate

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


def _forward(loaded, grays, batch: int = 32, tick=None):
    """Pooled features (N, K), probabilities (N, C) and raw CAMs at feature resolution (N, C, h, w);
    tick(done) after each batch."""
    import torch

    from ..explain.cam import cam_from_features  # torch: imported when the audit runs

    feats, probs, cams = [], [], []
    model = loaded.model
    with torch.no_grad():
        for i in range(0, len(grays), batch):
            x = torch.cat([loaded.tensor(g) for g in grays[i:i + batch]])
            f = model.forward_features(x).float()
            pooled = model.forward_head(f, pre_logits=True)
            feats.append(pooled.cpu().numpy())
            probs.append(torch.sigmoid(model.classifier(pooled)).cpu().numpy())
            cams.append(cam_from_features(model, f).cpu().numpy())
            if tick:
                tick(min(i + batch, len(grays)))
    if not feats:
        return np.zeros((0, model.num_features)), np.zeros((0, model.num_classes)), np.zeros((0, model.num_classes, 1,
                                                                                              1))
    return np.concatenate(feats), np.concatenate(probs), np.concatenate(cams)


def probe_auc(x: np.ndarray, sources: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """Cross-validated AUC of predicting `sources` from x (binary, or macro one-vs-rest)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sources = np.asarray(sources).astype(str)
    names, counts = np.unique(sources, return_counts=True)
    if len(names) < 2:
        return {"auc": None, "reason": "one source only"}
    folds = int(min(5, counts.min(), len(np.unique(groups))))
    if folds < 2:
        return {"auc": None, "reason": "too few images per source"}
    dims = int(min(PROBE_DIMS, x.shape[1], len(x) * (folds - 1) // folds - 1))
    clf = make_pipeline(StandardScaler(), PCA(n_components=dims, random_state=seed),
                        LogisticRegression(C=0.1, max_iter=3000))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    proba = cross_val_predict(clf, x, sources, groups=groups, cv=cv, method="predict_proba")
    if len(names) == 2:
        auc = roc_auc_score(sources == names[1], proba[:, 1])
    else:
        auc = roc_auc_score(sources, proba, multi_class="ovr", average="macro", labels=names)
    each = {str(n): float(roc_auc_score(sources == n, proba[:, k])) for k, n in enumerate(names)}
    return {"auc": float(auc), "sources": {str(n): int(c) for n, c in zip(names, counts)}, "folds": folds,
            "each": each}


def label_from_source(labels: np.ndarray, sources: np.ndarray) -> float | None:
    """AUC of each source's positive rate used as the score for the label: 0.5 = the source says
    nothing of the label, 1 = the source alone gives the label away."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, float)
    m = ~np.isnan(y)
    y, s = y[m], np.asarray(sources).astype(str)[m]
    if y.size == 0 or y.min() == y.max() or len(np.unique(s)) < 2:
        return None
    rate = pd.Series(y).groupby(s).transform("mean").to_numpy()
    return float(roc_auc_score(y, rate))


def _pool_rare(sources: np.ndarray, min_count: int = MIN_SOURCE) -> np.ndarray:
    s = pd.Series(np.asarray(sources).astype(str))
    counts = s.value_counts()
    return s.where(s.map(counts) >= min_count, "other").to_numpy()


def _sample(frame: pd.DataFrame, by: str, per_source: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in frame.groupby(by, sort=True):
        keep.extend(rng.permutation(g.index.to_numpy())[:per_source])
    return frame.loc[sorted(keep)]


def _grays(ds, idx, errors: list, tick=None) -> tuple[list, list]:
    from ..data.images import ImageReadError

    out, ok = [], []
    for j, i in enumerate(idx):
        try:
            out.append(ds.read_gray(int(i)))
            ok.append(int(i))
        except ImageReadError as exc:
            errors.append(str(exc))
        if tick and (j + 1) % 10 == 0:
            tick(j + 1)
    return out, ok


def source_evidence(loaded, pool: list, headline: str, *, per_source: int, seed: int, progress=None) -> list[dict]:
    """Probe rows for the collection level and the origin level. pool: [(dataset, rows mask or None,
    own data?)]; each row of the evidence names its level, the probe AUCs and the label confound."""
    from ..landscape.embeddings import pixel_features

    levels = []
    frames = []
    for ds, own in pool:
        f = ds.frame.copy()
        f["_k"] = np.arange(len(f))
        f["_ds"] = id(ds)
        f["_own"] = own
        f["_label"] = ds.targets[:, list(ds.class_names).index(headline)] if headline in ds.class_names else np.nan
        frames.append((ds, f))
    all_rows = pd.concat([f for _, f in frames], ignore_index=True)
    has_nih = (all_rows["dataset"] == "nih").any()
    has_covid = (all_rows["dataset"] == "covid").any()
    specs = []
    if has_nih and has_covid:
        named = all_rows.assign(collection=all_rows["dataset"].map(COLLECTION_NAMES).fillna(all_rows["dataset"]))
        specs.append(("collection", "ChestX-ray14 vs the COVID-19 collection", named, "collection"))
    cov = all_rows[all_rows["dataset"] == "covid"].copy()
    if len(cov) and "source" in cov:
        cov["origin"] = _pool_rare(cov["source"].fillna("unknown").to_numpy())
        if cov["origin"].nunique() >= 2:
            specs.append(("origin", "origins within the COVID-19 collection (web host of the url)", cov, "origin"))
    by_ds = {id(ds): ds for ds, _ in frames}
    errors: list[str] = []
    for level, title, rows, col in specs:
        sample = _sample(rows, col, per_source, seed)
        grays, keep_rows, n = [], [], len(sample)
        reading, running = f"{title}: reading {n} images", f"{title}: the model on {n} images"
        for dsid, g in sample.groupby("_ds", sort=False):
            # bound now, called within this iteration only
            tick = (lambda j, base=len(grays): progress(reading, base + j, n)) if progress else None  # noqa: B008, B023
            gr, ok = _grays(by_ds[dsid], g["_k"].to_numpy(), errors, tick)
            grays += gr
            keep_rows.append(g[g["_k"].isin(ok)])
        sample = pd.concat(keep_rows)
        feats, _, _ = _forward(loaded, grays, tick=(lambda k: progress(running, k, len(grays))) if progress else None)  # noqa: B023
        src = sample[col].astype(str).to_numpy()
        pid = sample["patient_id"].astype(str).to_numpy()
        model_probe = probe_auc(feats, src, pid, seed)
        pixel_probe = probe_auc(pixel_features(grays), src, pid, seed)
        own = sample[sample["_own"]]
        own_src, own_y = own[col].astype(str).to_numpy(), own["_label"].to_numpy(float)
        lfs = label_from_source(own_y, own_src)
        breakdown = []
        for name, n in model_probe.get("sources", {}).items():
            here, rest = own_y[own_src == name], own_y[own_src != name]
            rate = _rate(here)
            breakdown.append({"source": name, "images": n, "source_auc": model_probe["each"][name],
                               "pixel_source_auc": pixel_probe.get("each", {}).get(name),
                               "positive_rate": rate, "positive_rate_elsewhere": _rate(rest),
                               "skewed": bool(rate is not None and _rate(rest) is not None
                                              and abs(rate - _rate(rest)) >= SKEW_FLAG)})
        telltale = [p for p in breakdown if p["skewed"] and p["source_auc"] >= SOURCE_FLAG]
        overall = (model_probe.get("auc") is not None and lfs is not None
                   and model_probe["auc"] >= SOURCE_FLAG and lfs >= LABEL_FROM_SOURCE_FLAG)
        levels.append({"level": level, "title": title, "images": len(sample), "sources": model_probe.get("sources", {}),
                       "source_auc": model_probe.get("auc"), "pixel_source_auc": pixel_probe.get("auc"),
                       "label_from_source": lfs, "reason": model_probe.get("reason"), "class": headline,
                       "per_source": breakdown, "telltale": [p["source"] for p in telltale],
                       "flag": bool(overall or telltale)})
    return levels


def _rate(y: np.ndarray) -> float | None:
    y = np.asarray(y, float)
    y = y[~np.isnan(y)]
    return float(y.mean()) if y.size else None


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
        _, p, _ = _forward(loaded, copies)
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
    grid = size // 32
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
        _, probs, cams = _forward(loaded, grays)
        _, p_border, _ = _forward(loaded, [blank(g, "border") for g in grays])
        _, p_centre, _ = _forward(loaded, [blank(g, "centre") for g in grays])
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
    from ..data.images import resize_gray

    return resize_gray(resize_gray(gray, loaded.load_size), loaded.image_size)


def _mean(s) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


def drop_evidence(folder, headline: str) -> list[dict]:
    rows = []
    for name in folder.externals():
        e = folder.read_external(name)
        r = next((x for x in e.get("auc", []) if x["class"] == headline and x.get("labelled")), None)
        if r is None or r.get("auc") is None:
            rows.append({"name": name, "class": headline, "auc": None, "flag": False,
                         "note": f"{headline} is not labelled in {name}"})
            continue
        drop = r.get("drop")
        flag = bool(drop is not None and drop >= DROP_FLAG and r.get("high") is not None
                    and r["internal_auc"] is not None and r["high"] < r["internal_auc"])
        rows.append({"name": name, "class": headline, "images": e.get("images"), "auc": r["auc"], "low": r.get("low"),
                     "high": r.get("high"), "internal_auc": r.get("internal_auc"), "drop": drop,
                     "shared_with_training": e.get("overlap", {}).get("shared_images"), "flag": flag,
                     "auc_unseen": next((u["auc"] for u in (e.get("unseen") or {}).get("auc", [])
                                         if u["class"] == headline), None)})
    return rows


def _source_lines(sources: list[dict]) -> list[tuple[str, bool | None]]:
    """(sentence, flagged) per source probe; flagged None when nothing was measured."""
    out = []
    for s in sources:
        if s["source_auc"] is None:
            out.append((f"Source probe ({s['title']}): not measured, {s['reason']}.", None))
            continue
        text = (f"The run's features tell {s['title']} apart with AUC {s['source_auc']:.2f} (raw pixels "
                f"{_fmt(s['pixel_source_auc'])}); ")
        if s["label_from_source"] is None:
            text += "this run's labels all come from one of them, so here the source cannot give a label away."
        else:
            text += f"the source alone predicts {s['class']} with AUC {s['label_from_source']:.2f}."
        for p in s.get("per_source", []):
            if p["source"] in s.get("telltale", []):
                text += (f" It picks out {p['source']} with AUC {p['source_auc']:.2f}, and {_pct(p['positive_rate'])} of "
                         f"that source's images are {s['class']} against {_pct(p['positive_rate_elsewhere'])} elsewhere.")
        if s["flag"]:
            text += " Source and label are confounded and the model can see the source: its AUC may measure the source."
        out.append((text, bool(s["flag"])))
    return out


def _map_lines(cams: dict) -> list[tuple[str, bool | None]]:
    out = [("Where the model looks: " + cams[key] + ".", None) for key in ("too_coarse", "band_too_coarse")
           if cams.get(key)]
    for c, d in cams.get("classes", {}).items():
        tp, fp = d["TP"], d["FP"]
        if not tp["maps"]:
            out.append((f"{c}: no true positive among the {fp['maps']} most confident test images.", None))
            continue
        parts = []
        if tp["border"] is not None:
            parts.append(f"{_pct(tp['border'])} of the map lies in the border band ({_pct(cams['border_area'])} of the "
                         f"image) and {_pct(tp['outside_lung'])} outside the lung field")
        if tp["corner_focus"] is not None:
            parts.append(f"the most loaded corner cell holds {tp['corner_focus']:.1f}x its share of the area")
        parts.append(f"blanking the border band {_change(tp['drop_border_blanked'], f'the {c} probability')}, "
                     f"blanking a central box of the same area {_change(tp['drop_centre_blanked'])}")
        if tp.get("patch"):
            pt = tp["patch"]
            parts.append(f"blanking a square a quarter of the side at each of {pt['places']} places, the worst one "
                         f"({_where(pt['where'])}) {_change(pt['drop'])}, {pt['ratio']:.1f}x the typical place, and is "
                         f"the worst place on {_pct(pt['consistency'])} of the images")
        text = f"{c}, on the {tp['maps']} most confident true positives: " + "; ".join(parts) + "."
        if fp["maps"]:
            text += (f" False positives: blanking the border {_change(fp['drop_border_blanked'])}, the centre "
                     f"{_change(fp['drop_centre_blanked'])}.")
        if d["flag"]:
            text += (" The model reads one place of the image, where a marker or letters could sit, more than the "
                     "disease (" + "; ".join(d["reasons"]) + ").")
        out.append((text, bool(d["flag"])))
    return out


def _drop_lines(drops: list[dict]) -> list[tuple[str, bool | None]]:
    if not drops:
        return [("No external evaluation yet: `python -m engine evaluate RUN --on ROOT` measures the drop.", None)]
    out = []
    for d in drops:
        if d["auc"] is None:
            out.append((f"External {d['name']}: {d['note']}.", None))
            continue
        text = (f"External {d['name']}: {d['class']} AUC {estimate(d['auc'], d['low'], d['high'])} on "
                f"{d['images']} images vs {_fmt(d['internal_auc'])} internally (drop {_fmt(d['drop'])}).")
        if d.get("shared_with_training"):
            text += f" {d['shared_with_training']} of its images are the same film as training images"
            text += (f"; without them the AUC is {_fmt(d['auc_unseen'])}." if d.get("auc_unseen") is not None
                     else ".")
        if d["flag"]:
            text += " The result does not hold outside its source."
        out.append((text, bool(d["flag"])))
    return out


def verdict(sources: list[dict], cams: dict, drops: list[dict]) -> dict:
    """Plain sentences naming the evidence; `shortcut` is True (suspected), False (nothing found in
    what was measured) or None (nothing could be measured). The source probe speaks of the data (is
    the source visible and does it give the label away?); the maps, the occlusion tests and the
    external drop speak of the model (does it use the source?). A confounded source that no
    model-based check points at is said so (`confounded`), not called a shortcut."""
    data, model = _source_lines(sources), _map_lines(cams) + _drop_lines(drops)
    found = data + model
    measured = sum(f is not None for _, f in found)
    model_flags = sum(bool(f) for _, f in model)
    confounded = any(bool(f) for _, f in data)
    if model_flags:
        flagged = model_flags + sum(bool(f) for _, f in data)
        summary = f"Shortcut suspected: {flagged} of {measured} measurements point at the source rather than the disease."
        shortcut = True
    elif confounded:
        tested = any(d["auc"] is not None for d in drops)
        summary = ("Confounded data, no sign the model uses it: a source gives the label away and is visible to the "
                   "model, but its maps, the occlusion tests and " + ("the external evaluation" if tested else
                   "(not yet run) an external evaluation") + " do not point at it. An evaluation on images from "
                   "elsewhere (`evaluate RUN --on ROOT`) is the test that settles it.")
        shortcut = False
    elif measured:
        summary = f"No sign of a shortcut in the {measured} measurements made (which is not proof of none)."
        shortcut = False
    else:
        summary = "Cannot tell: nothing could be measured for this run."
        shortcut = None
    return {"shortcut": shortcut, "confounded": confounded, "summary": summary,
            "evidence": [text for text, _ in found]}


def _where(box) -> str:
    """A place of the image in words: "x 38-62 %, y 38-62 % of the side, mid-field"."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    edge = min(cx, cy, 1 - cx, 1 - cy) < 0.2
    return (f"x {100 * x0:.0f}-{100 * x1:.0f} %, y {100 * y0:.0f}-{100 * y1:.0f} % of the side, "
            + ("at the edge" if edge else "mid-field"))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _change(drop, what: str = "it") -> str:
    """A probability drop in words, its sign read naturally, `what` in its place: 0.003 -> "lowers it by
    0.003", -0.003 -> "raises it by 0.003" (never "lowers by -0.003", never "raises by 0.003 it")."""
    if drop is None:
        return f"changes {what} by an unmeasured amount"
    if abs(drop) < 5e-4:
        return f"leaves {what} unchanged"
    return f"{'lowers' if drop > 0 else 'raises'} {what} by {abs(drop):.3f}"


def audit_run(reg, run: str, *, per_source: int = 120, top_k: int = 12, seed: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the audit on a finished run and write checkpoints/<run>/audit.json (see module doc)."""
    from ..data.tasks import build_datasets, open_collection
    from ..explain.inference import LoadedModel
    row = reg.require(run)
    folder = reg.folder(run)
    loaded = LoadedModel(folder.best_checkpoint())
    cfg = ExperimentConfig.from_dict(row.config)
    headline = headline_class(cfg.data.task)
    if headline == "mean":
        headline = loaded.class_names[0]
    datasets = build_datasets(cfg)
    pool = [(datasets[s], True) for s in ("train", "val", "test")]
    other_kind = {"covid": "nih", "pneumonia": "nih", "nih": "covid"}.get(cfg.data.task)
    notes = []
    if other_kind:
        root = resolve_root(other_kind, getattr(cfg.data, f"{other_kind}_root"), required=False)
        if root is None:
            notes.append(f"no {other_kind} root configured: the collection-level probe needs images of both collections")
        else:
            pool.append((open_collection(other_kind, root, cfg.data), False))
    sources = source_evidence(loaded, pool, headline, per_source=per_source, seed=seed, progress=progress)
    pred_path = folder.predictions("test")
    predictions = read_if_present(pred_path)
    classes = [headline] if cfg.data.task in ("covid", "combined15") else list(loaded.class_names)
    cams = cam_evidence(loaded, datasets["test"], predictions, classes, top_k, progress)
    drops = drop_evidence(folder, headline)
    out = {"run": run, "created": time.time(), "headline_class": headline, "notes": notes, "top_k": top_k,
           "sources": sources, "maps": cams, "external": drops, "verdict": verdict(sources, cams, drops),
           "definitions": {"border_band": BORDER, "lung_box": LUNG_BOX, "min_grid": MIN_GRID,
                           "flags": {"border": BORDER_FLAG, "outside_lung": OUTSIDE_FLAG, "source_auc": SOURCE_FLAG,
                                     "label_from_source": LABEL_FROM_SOURCE_FLAG, "drop": DROP_FLAG}}}
    write_json(folder.path / AUDIT, out)
    return out


def read_audit(folder) -> dict:
    p = folder.path / AUDIT
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}
