"""Operating points and calibration: what a threshold does on new patients.

A threshold is chosen on validation predictions by one of four rules, then applied unchanged to the
test (or an external) set, where sensitivity, specificity, PPV, NPV and F1 get patient-bootstrap
95 % intervals:

    youden        maximises sensitivity + specificity - 1 (Youden's J) on validation
    sensitivity   the highest threshold whose validation sensitivity reaches the target (default 0.90)
    specificity   the lowest threshold whose validation specificity reaches the target (default 0.90)
    f1            maximises F1 on validation

Calibration: a reliability diagram (10 equal-width bins, binned as sklearn's calibration_curve bins), the expected
calibration error (ECE: the bin-size-weighted mean |observed rate - mean predicted probability|)
and the Brier score (sklearn's brier_score_loss). A prediction is positive when prob >= threshold.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, precision_recall_curve, roc_curve

from ..metrics import patient_weights
from ..runs.predictions import Predictions

RULES = ("youden", "sensitivity", "specificity", "f1")
RATES = ("sensitivity", "specificity", "ppv", "npv", "f1")


def _known(y, s, groups=None):
    y, s = np.asarray(y, float), np.asarray(s, float)
    m = ~np.isnan(y) & ~np.isnan(s)
    g = None if groups is None else np.asarray(groups).astype(str)[m]
    return y[m].astype(int), s[m], g


def choose_threshold(y, s, rule: str = "youden", target: float = 0.9) -> float | None:
    """The threshold of `rule` on (labels, scores); None when a class lacks positives or negatives."""
    y, s, _ = _known(y, s)
    if y.size == 0 or y.min() == y.max():
        return None
    if rule == "f1":
        p, r, thr = precision_recall_curve(y, s)
        f1 = np.where(p[:-1] + r[:-1] > 0, 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12), 0)
        return float(thr[int(np.argmax(f1))])
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if rule == "sensitivity":
        ok = np.flatnonzero(tpr >= target)  # thresholds decrease along the curve: the first is the highest
        return float(thr[ok[0]]) if ok.size else float(thr[-1])
    if rule == "specificity":
        ok = np.flatnonzero(1 - fpr >= target)
        return float(thr[ok[-1]]) if ok.size else float(thr[0])
    raise ValueError(f"unknown threshold rule {rule!r}; allowed: {', '.join(RULES)}")


def _rates(tp, fp, tn, fn) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        ppv = tp / (tp + fp)
        npv = tn / (tn + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"sensitivity": sens, "specificity": spec, "ppv": ppv, "npv": npv, "f1": f1}


def rates_at(y, s, threshold: float, groups=None, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Confusion matrix and rates at `threshold`, each rate with a percentile bootstrap interval
    resampling `groups` (patients; images when None). NaN where a rate is undefined."""
    y, s, g = _known(y, s, groups)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel() if y.size else (0, 0, 0, 0)
    point = _rates(*(np.float64(v) for v in (tp, fp, tn, fn)))
    out = {"threshold": float(threshold), "n": int(y.size), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
    samples = {k: [] for k in RATES}
    if n_boot > 0 and y.size:
        cells = np.stack([(y == 1) & (pred == 1), (y == 0) & (pred == 1), (y == 0) & (pred == 0),
                          (y == 1) & (pred == 0)])
        for w in patient_weights(g, y.size, n=n_boot, seed=seed):
            tp_b, fp_b, tn_b, fn_b = (w @ cells.T.astype(float)).T
            for k, v in _rates(tp_b, fp_b, tn_b, fn_b).items():
                samples[k].append(v)
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    for k in RATES:
        v = float(point[k])
        out[k] = v if np.isfinite(v) else None
        b = np.concatenate(samples[k]) if samples[k] else np.array([])
        b = b[np.isfinite(b)]
        out[f"{k}_low"] = float(np.percentile(b, lo)) if b.size and out[k] is not None else None
        out[f"{k}_high"] = float(np.percentile(b, hi)) if b.size and out[k] is not None else None
    return out


def calibration(y, s, n_bins: int = 10) -> dict:
    """Reliability diagram points, ECE and Brier score of one class's probabilities."""
    y, s, _ = _known(y, s)
    if y.size == 0 or y.min() == y.max():
        return {"bins": [], "ece": None, "brier": None, "n": int(y.size)}
    # One binning for the counts and the means alike: scikit-learn's calibration_curve rule, where a
    # probability on an edge (0.5) joins the bin below. Counting with one rule and averaging with
    # another put an edge value in two bins (ECE 0.339 instead of 0.217, issue 24).
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], s)
    counts = np.bincount(idx, minlength=n_bins)
    full = counts > 0
    mean_pred = np.bincount(idx, weights=s, minlength=n_bins)[full] / counts[full]
    frac_pos = np.bincount(idx, weights=y, minlength=n_bins)[full] / counts[full]
    counts = counts[full]
    ece = float(np.sum(counts / y.size * np.abs(frac_pos - mean_pred)))
    bins = [{"mean_predicted": float(m), "observed": float(f), "images": int(c)}
            for m, f, c in zip(mean_pred, frac_pos, counts)]
    return {"bins": bins, "ece": ece, "brier": float(brier_score_loss(y, s)), "n": int(y.size)}


def operating_points(val: Predictions, test: Predictions, class_names: Sequence[str], *,
                     sensitivity: float = 0.9, specificity: float = 0.9, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per class: each rule's validation threshold applied to `test`, and test calibration.

    val/test are predictions tables (engine.runs.predictions); a class val lacks gets no thresholds."""
    out = {"sensitivity_target": sensitivity, "specificity_target": specificity, "classes": {}}
    for c in class_names:
        if not test.has(c):
            continue
        yt, st, g = test.target(c), test.prob(c), test.clusters
        points = []
        for rule in RULES:
            target = sensitivity if rule == "sensitivity" else specificity
            thr = choose_threshold(val.target(c), val.prob(c), rule, target) if val.has(c) else None
            if thr is None:
                points.append({"rule": rule, "threshold": None})
                continue
            points.append({"rule": rule, **rates_at(yt, st, thr, g, n_boot=n_boot, seed=seed)})
        out["classes"][c] = {"points": points, "calibration": calibration(yt, st)}
    return out
