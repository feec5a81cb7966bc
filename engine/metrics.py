"""ROC curves, per-class AUROC and patient-level bootstrap confidence intervals. Pure numpy.

AUC is undefined (NaN) for a class with no positive or no negative among the known targets;
NaN targets (unknown labels) are left out per class. The bootstrap resamples patients, not images,
because images of one patient are correlated: a weighted Mann-Whitney statistic over one sort per
class makes 1,000 resamples of a 25,000-image test set take seconds.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass
class RocCurve:
    class_name: str
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float
    positives: int
    negatives: int

    def records(self, max_points: int | None = None) -> list[dict]:
        """One record per ROC point; with max_points, a curve of more points is thinned for drawing
        (points evenly spaced along its length, the first and last kept: at a chart's width the line
        is the same, and a 25,596-image test set no longer ships 35,000 points to the browser)."""
        fpr, tpr = self.fpr, self.tpr
        if max_points and len(fpr) > max_points:
            length = np.r_[0.0, np.cumsum(np.hypot(np.diff(fpr), np.diff(tpr)))]
            keep = np.unique(np.searchsorted(length, np.linspace(0, length[-1], max_points)).clip(0, len(fpr) - 1))
            keep = np.unique(np.r_[0, keep, len(fpr) - 1])
            fpr, tpr = fpr[keep], tpr[keep]
        return [{"class": self.class_name, "fpr": float(f), "tpr": float(t), "auc": self.auc}
                for f, t in zip(fpr, tpr)]


def _known(targets: np.ndarray, c: int) -> np.ndarray:
    return ~np.isnan(targets[:, c])


def per_class_auc(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N, C) targets (0/1/NaN), (N, C) scores -> (C,) AUROC, NaN where undefined."""
    targets, probs = np.asarray(targets, float), np.asarray(probs, float)
    out = np.full(targets.shape[1], np.nan)
    for c in range(targets.shape[1]):
        m = _known(targets, c)
        y = targets[m, c]
        if y.size and 0 < y.sum() < y.size:
            out[c] = roc_auc_score(y, probs[m, c])
    return out


def mean_auc(aucs: np.ndarray) -> float:
    """Mean over the classes where AUC is defined (NaN if none is)."""
    aucs = np.asarray(aucs, float)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def roc_curves(targets: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> list[RocCurve]:
    """One RocCurve per class with a defined AUC (drawing is for ui/charts.py)."""
    out = []
    for c, name in enumerate(class_names):
        m = _known(targets, c)
        y = targets[m, c]
        if not (y.size and 0 < y.sum() < y.size):
            continue
        fpr, tpr, thr = roc_curve(y, probs[m, c])
        out.append(RocCurve(name, fpr, tpr, thr, float(roc_auc_score(y, probs[m, c])), int(y.sum()),
                            int(y.size - y.sum())))
    return out


def _weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC under sample weights. y (N,) 0/1, s (N,) scores, weights (B, N) -> (B,).

    Ties count one half, as in the Mann-Whitney U statistic (equal to sklearn when weights are 1).
    """
    order = np.argsort(s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    pos_w = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg_w = np.add.reduceat(w * (1 - y_sorted), starts, axis=1)
    neg_before = np.cumsum(neg_w, axis=1) - neg_w
    num = (pos_w * (neg_before + 0.5 * neg_w)).sum(axis=1)
    den = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def patient_weights(groups: Sequence | None, N: int, *, n: int, seed: int = 0, chunk: int = 100):
    """Bootstrap weights over N images in chunks of (b, N): each image weighs as often as its group
    (patient) was drawn; groups None resamples images. The same seed gives the same resamples, so
    two models scored with them are compared on the same patients (a paired bootstrap)."""
    gid = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1] if groups is not None else np.arange(N)
    G = int(gid.max()) + 1 if N else 0
    rng = np.random.default_rng(seed)
    for b0 in range(0, n, chunk):
        b = min(chunk, n - b0)
        picks = rng.integers(0, G, size=(b, G))
        # how often each patient was drawn in each resample (bincount: np.add.at is 10x slower)
        gw = np.bincount((picks + (np.arange(b) * G)[:, None]).ravel(), minlength=b * G).reshape(b, G)
        yield gw[:, gid].astype(float)


def bootstrap_auc(targets: np.ndarray, probs: np.ndarray, groups: Sequence | None = None, *, n: int = 1000,
                  seed: int = 0, alpha: float = 0.05, chunk: int = 100) -> dict:
    """Percentile bootstrap CIs of per-class AUC and of the mean AUC, resampling `groups` (patients).

    Returns {"auc": (C,), "low": (C,), "high": (C,), "mean": float, "mean_low", "mean_high", "n": n}.
    """
    targets, probs = np.asarray(targets, float), np.asarray(probs, float)
    N, C = targets.shape
    point = per_class_auc(targets, probs)
    out = {"auc": point, "low": np.full(C, np.nan), "high": np.full(C, np.nan), "mean": mean_auc(point),
           "mean_low": float("nan"), "mean_high": float("nan"), "n": int(n)}
    if n <= 0 or N == 0:
        return out
    samples = np.full((n, C), np.nan)
    row = 0
    for w in patient_weights(groups, N, n=n, seed=seed, chunk=chunk):
        for c in range(C):
            m = _known(targets, c)
            y = targets[m, c]
            if not (y.size and 0 < y.sum() < y.size):
                continue
            samples[row:row + len(w), c] = _weighted_auc(y, probs[m, c], w[:, m])
        row += len(w)
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["low"] = np.nanpercentile(samples, lo, axis=0)
            out["high"] = np.nanpercentile(samples, hi, axis=0)
            means = np.nanmean(np.where(np.isfinite(point)[None, :], samples, np.nan), axis=1)
    means = means[np.isfinite(means)]
    if means.size:
        out["mean_low"], out["mean_high"] = float(np.percentile(means, lo)), float(np.percentile(means, hi))
    return out


def auc_table(boot: dict, class_names: Sequence[str]) -> list[dict]:
    """Rows {class, auc, low, high} (JSON-friendly; NaN -> None)."""
    def f(x):
        return None if x is None or not np.isfinite(x) else round(float(x), 6)

    rows = [{"class": n, "auc": f(boot["auc"][k]), "low": f(boot["low"][k]), "high": f(boot["high"][k])}
            for k, n in enumerate(class_names)]
    rows.append({"class": "mean", "auc": f(boot["mean"]), "low": f(boot["mean_low"]), "high": f(boot["mean_high"])})
    return rows
