"""Source predictability: a cross-validated linear probe of each image's source from the run's
features (and from raw pixels), and how far the source gives the label away."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import model
from .rules import COLLECTION_NAMES, LABEL_FROM_SOURCE_FLAG, MIN_SOURCE, PROBE_DIMS, SKEW_FLAG, SOURCE_FLAG


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
    from ...data.images import ImageReadError

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
    from ...landscape.embeddings import pixel_features

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
        feats, _, _ = model.forward(loaded, grays, tick=(lambda k: progress(running, k, len(grays))) if progress else None)  # noqa: B023
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

