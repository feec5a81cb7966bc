"""AUC per patient subgroup: sex, age band and view position, with patient-bootstrap intervals.

Each attribute's groups are sliced with numpy (fairlearn's MetricFrame, used before, cost 0.5 CPU-s
per call on a 25,596-image test set: 24 s a table); intervals come from resampling the group's
patients (engine.metrics.bootstrap_auc). A group is

    one class   only positives or only negatives: an AUC does not exist there; shown with its counts
    too small   fewer than `min_images` images or fewer than `min_class` positives or negatives:
                shown with its counts, never scored (an AUC on 3 positives says nothing)
    flagged     its interval's upper end lies below the overall AUC: the model is measurably worse
                for this group (the kind of gap Seyyed-Kalantari et al., Nature Medicine 2021, found)

Age bands: 0-39, 40-59, 60-79, 80+ years. Views: PA, AP, AP supine, other (case and spacing ignored).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ..data.covid import view_key
from ..data.manifest import sex_value
from ..metrics import bootstrap_auc
from ..runs.predictions import Predictions

ATTRIBUTES = ("sex", "age band", "view")
AGE_BANDS = ((0, 40, "0-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80+"))
MIN_IMAGES, MIN_CLASS = 20, 5


def age_band(age) -> str:
    try:
        a = float(age)
    except (TypeError, ValueError):
        return ""
    if not np.isfinite(a) or a < 0 or a >= 200:
        return ""
    return next(name for lo, hi, name in AGE_BANDS if lo <= a < hi)


def view_group(view) -> str:
    v = view_key(view)
    if not v or v in {"nan", "?"}:
        return ""
    return {"pa": "PA", "ap": "AP", "ap erect": "AP", "ap supine": "AP supine"}.get(v, "other")


sex_group = sex_value  # M / F / "" from any collection's spelling (one rule, the manifest's)


def attributes(frame: pd.DataFrame) -> pd.DataFrame:
    """The three grouping columns of a predictions table ("" where unknown)."""
    n = len(frame)
    col = lambda c: frame[c] if c in frame else pd.Series([""] * n, index=frame.index)  # noqa: E731
    return pd.DataFrame({"sex": col("sex").map(sex_group), "age band": col("age").map(age_band),
                         "view": col("view").map(view_group)}, index=frame.index)


def _auc_or_nan(y_true, y_score) -> float:
    y = np.asarray(y_true)
    return float(roc_auc_score(y, y_score)) if 0 < y.sum() < y.size else float("nan")


def subgroup_table(preds: Predictions, class_names: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                   min_images: int = MIN_IMAGES, min_class: int = MIN_CLASS) -> list[dict]:
    """One row per (class, attribute, group): images, positives, AUC with interval, the class's
    overall AUC, and a status of ok / flagged / one class / too small. Groups with unknown values are left out
    and their count reported under the group "(unknown)"."""
    attrs = attributes(preds.info)
    rows: list[dict] = []
    for c in class_names:
        if not preds.has(c):
            continue
        known = preds.labelled(c)
        if not known.any():
            continue
        y, s = preds.target(c)[known], preds.prob(c)[known]
        pid = preds.clusters[known]
        overall = bootstrap_auc(y[:, None], s[:, None], pid, n=n_boot, seed=seed)
        overall_auc = float(overall["auc"][0])
        for a in ATTRIBUTES:
            g = attrs[a].to_numpy()[known]
            has = g != ""
            if (~has).any():
                rows.append({"class": c, "attribute": a, "group": "(unknown)", "images": int((~has).sum()),
                             "positives": int(y[~has].sum()), "auc": None, "low": None, "high": None,
                             "overall_auc": overall_auc, "status": "not grouped"})
            if not has.any():
                continue
            for group in np.unique(g[has]):  # sorted, as a groupby gives them
                m = has & (g == group)
                n, pos = int(m.sum()), int(y[m].sum())
                row = {"class": c, "attribute": a, "group": str(group), "images": n, "positives": pos,
                       "auc": None, "low": None, "high": None, "overall_auc": overall_auc}
                if pos == 0 or pos == n:
                    row["status"] = "one class"
                elif n < min_images or pos < min_class or n - pos < min_class:
                    row["status"] = "too small"
                else:
                    b = bootstrap_auc(y[m][:, None], s[m][:, None], pid[m], n=n_boot, seed=seed)
                    row.update(auc=_auc_or_nan(y[m], s[m]), low=_f(b["low"][0]), high=_f(b["high"][0]))
                    row["status"] = "flagged" if row["high"] is not None and row["high"] < overall_auc else "ok"
                rows.append(row)
    return rows


def _f(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None
