"""Comparing two models on the same images: DeLong's test for two correlated ROC curves (the fast
algorithm of Sun and Xu, IEEE Signal Processing Letters 21(11), 2014) and the paired bootstrap of
the AUC difference, resampling patients (the unit images are correlated within).

DeLong E.R., DeLong D.M., Clarke-Pearson D.L., Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach. Biometrics 44 (1988) 837-845.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .metrics import _known, _weighted_auc, patient_weights


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x with ties given their average rank (Sun and Xu's midrank)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    ranks = np.empty(n, dtype=float)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=float)
    out[order] = ranks
    return out


def delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For K score vectors on the same cases: AUCs (K,), V10 (K, m) over the m positives and V01
    (K, n) over the n negatives (DeLong's structural components), by midranks in O(K N log N)."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both positives and negatives")
    aucs, v10, v01 = [], [], []
    for s in scores:
        tz = midranks(s)
        tx, ty = midranks(s[y]), midranks(s[~y])
        aucs.append((tz[y].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[y] - tx) / n)
        v01.append(1.0 - (tz[~y] - ty) / m)
    return np.array(aucs), np.array(v10), np.array(v01)


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (K,), their covariance matrix (K, K)) by DeLong's method."""
    aucs, v10, v01 = delong_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def clustered_delong_covariance(y: np.ndarray, scores: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (K,), covariance (K, K)) when cases come in clusters (a patient's several images):
    Obuchowski's extension of DeLong's method (Biometrics 53, 1997), which sums each cluster's
    structural components before taking their variance, so correlated images of one patient are not
    counted as independent evidence. Her small-sample factors: I10/(I10-1) for S10 and I01/(I01-1) for
    S01, where I10 (I01) counts the clusters holding at least one positive (negative), and I/(I-1) for
    S11 over all I clusters; with one image per cluster this is DeLong's covariance exactly."""
    y = np.asarray(y).astype(bool)
    aucs, v10, v01 = delong_components(y, scores)
    _, ids = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    n_clusters = int(ids.max()) + 1
    if n_clusters < 2:
        raise ValueError("the clustered DeLong test needs at least two clusters")
    k = len(aucs)
    x = np.zeros((k, n_clusters))
    yy = np.zeros((k, n_clusters))
    for j in range(k):
        x[j] = np.bincount(ids[y], weights=v10[j], minlength=n_clusters)
        yy[j] = np.bincount(ids[~y], weights=v01[j], minlength=n_clusters)
    m_i = np.bincount(ids[y], minlength=n_clusters).astype(float)
    n_i = np.bincount(ids[~y], minlength=n_clusters).astype(float)
    big_m, big_n = m_i.sum(), n_i.sum()
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        raise ValueError(f"the clustered DeLong test needs positives in at least two clusters and negatives in at "
                         f"least two (here {i10} and {i01})")
    dx = x - m_i[None, :] * aucs[:, None]
    dy = yy - n_i[None, :] * aucs[:, None]
    s10 = i10 / (i10 - 1) / big_m * dx @ dx.T
    s01 = i01 / (i01 - 1) / big_n * dy @ dy.T
    s11 = n_clusters / (n_clusters - 1) * dx @ dy.T
    return aucs, s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n)


def delong_test(y, scores_a, scores_b, alpha: float = 0.05, clusters=None) -> dict:
    """DeLong's test of AUC(a) = AUC(b) on the same cases: AUCs, their difference (a - b) with its
    standard error and (1 - alpha) interval, z and the two-sided p-value. With `clusters` (one id per
    case) holding some case twice, the clustered covariance (Obuchowski 1997); "clustered" says which."""
    stacked = np.vstack([scores_a, scores_b])
    clustered = clusters is not None and len(np.unique(np.asarray(clusters).astype(str))) < len(np.asarray(y))
    aucs, cov = clustered_delong_covariance(y, stacked, clusters) if clustered else delong_covariance(y, stacked)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    zc = _normal_quantile(1 - alpha / 2)
    if se == 0.0:
        z, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": se,
            "low": diff - zc * se, "high": diff + zc * se, "z": z, "p": p, "clustered": bool(clustered)}


def hanley_mcneil_variance(auc: float, n_pos: int, n_neg: int) -> float:
    """The variance of an AUC from n_pos positives and n_neg negatives (Hanley and McNeil, Radiology
    143, 1982): (A(1-A) + (n_pos-1)(Q1-A^2) + (n_neg-1)(Q2-A^2)) / (n_pos n_neg)."""
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)


def images_needed(auc_a: float, auc_b: float, n_pos: int, n_neg: int, r: float = 0.0, *, diff: float | None = None,
                  alpha: float = 0.05, power: float = 0.8, limit: int = 10_000_000) -> dict | None:
    """How many test images (positives and negatives in the observed proportion) a paired comparison
    needs to detect `diff` (default: the observed AUC(a) - AUC(b)) with `power` at two-sided `alpha`,
    from Hanley and McNeil's variances and the correlation `r` of the two AUCs on the same images
    (Obuchowski and McClish 1997's approach). None when there is no difference to detect."""
    d = abs(auc_a - auc_b if diff is None else diff)
    if d <= 0 or n_pos < 1 or n_neg < 1:
        return None
    z = _normal_quantile(1 - alpha / 2) + _normal_quantile(power)
    share = n_pos / (n_pos + n_neg)
    r = min(max(r, -0.99), 0.99)

    def se(total: int) -> float:
        p_, n_ = max(1, round(total * share)), max(1, total - round(total * share))
        va, vb = hanley_mcneil_variance(auc_a, p_, n_), hanley_mcneil_variance(auc_b, p_, n_)
        return math.sqrt(max(va + vb - 2 * r * math.sqrt(va * vb), 1e-18))

    lo, hi = 2, 2
    while se(hi) * z > d:
        lo, hi = hi, hi * 2
        if hi > limit:
            return {"images": None, "positives": None, "negatives": None, "diff": d, "power": power, "alpha": alpha,
                    "text": f"more than {limit:,} test images"}
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if se(mid) * z > d else (lo, mid)
    pos = max(1, round(hi * share))
    return {"images": hi, "positives": pos, "negatives": hi - pos, "diff": d, "power": power, "alpha": alpha,
            "r": r, "text": f"about {hi:,} test images ({pos:,} positive) for {power:.0%} power to detect "
                            f"{d:.3f} at alpha {alpha:g}"}


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def paired_bootstrap(targets, probs_a, probs_b, groups=None, *, n: int = 2000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Paired patient-level bootstrap of AUC(a) - AUC(b), per class and for the mean over classes:
    both models are scored on the same resampled patients. targets/probs (N, C) with NaN unknown.
    Returns {"diff" (C,), "low" (C,), "high" (C,), "p" (C,), "mean_diff", "mean_low", "mean_high",
    "mean_p", "n"}; p is the two-sided bootstrap p-value (twice the smaller tail beyond 0)."""
    targets = np.asarray(targets, float)
    pa, pb = np.asarray(probs_a, float), np.asarray(probs_b, float)
    N, C = targets.shape
    diffs = np.full((n, C), np.nan)
    point = np.full(C, np.nan)
    usable = []
    for c in range(C):
        m = _known(targets, c)
        y = targets[m, c]
        if y.size and 0 < y.sum() < y.size:
            usable.append((c, m, y))
            ones = np.ones((1, int(m.sum())))
            point[c] = _weighted_auc(y, pa[m, c], ones)[0] - _weighted_auc(y, pb[m, c], ones)[0]
    row = 0
    for w in patient_weights(groups, N, n=n, seed=seed):
        for c, m, y in usable:
            diffs[row:row + len(w), c] = _weighted_auc(y, pa[m, c], w[:, m]) - _weighted_auc(y, pb[m, c], w[:, m])
        row += len(w)
    out = {"diff": point, "n": int(n)}
    out["low"], out["high"], out["p"] = _summarise(diffs, alpha)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(np.where(np.isfinite(point)[None, :], diffs, np.nan), axis=1, keepdims=True)
    out["mean_diff"] = float(np.nanmean(point)) if np.isfinite(point).any() else float("nan")
    lo, hi, p = _summarise(means, alpha)
    out["mean_low"], out["mean_high"], out["mean_p"] = float(lo[0]), float(hi[0]), float(p[0])
    return out


def _summarise(samples: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile interval and two-sided bootstrap p-value of each column (NaN where undefined)."""
    k = samples.shape[1]
    low, high, p = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    for j in range(k):
        s = samples[:, j]
        s = s[np.isfinite(s)]
        if s.size:
            low[j], high[j] = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
            # two-sided, never below 1/(B+1): B resamples cannot show a smaller p (Davison and Hinkley 1997)
            p[j] = min(1.0, max(2 * min((s <= 0).mean(), (s >= 0).mean()), 1.0 / (s.size + 1)))
    return low, high, p


def p_floor(n_resamples: int) -> float:
    """The smallest p a bootstrap of n_resamples can give."""
    return 1.0 / (n_resamples + 1)


def p_text(p: float, floor: float | None = None) -> str:
    """A p-value in words. At a bootstrap's floor (1/(B+1)) it is a bound with one significant digit,
    written plainly: "p < 0.005" (B = 200: the floor 0.004975 rounds up), "p <= 0.005" (B = 199: the
    floor is 0.005 itself), "p < 0.001" (B = 1000), "p <= 0.001" (B = 999), "p < 0.01" (B = 100);
    never "p < 0.0010", never "<" for a p equal to its bound, never "p < 0.001" from 200 resamples."""
    if floor is not None and p <= floor * (1 + 1e-9):
        digits = max(0, -math.floor(math.log10(floor)))
        bound = math.ceil(round(floor * 10 ** digits, 9)) / 10 ** digits  # 1/201 -> 0.005, 1/1001 -> 0.001
        sign = "<=" if math.isclose(bound, floor, rel_tol=1e-9) else "<"
        return f"p {sign} {f'{bound:.{digits}f}'.rstrip('0').rstrip('.')}"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def corrected_resampled_t(diffs, n_train: int | None, n_test: int | None) -> dict:
    """Nadeau and Bengio's corrected resampled t-test (Machine Learning 52, 2003) of differences
    measured on K resamples whose training sets overlap: the variance of the mean difference is
    (1/K + n_test/n_train) s^2 instead of s^2/K, which the plain t-test underestimates. Two-sided p
    from Student's t with K - 1 degrees of freedom; p is None below two resamples, without a
    spread, or when the split sizes are unknown."""
    from scipy import stats as sps

    d = np.asarray([x for x in diffs if x is not None and np.isfinite(x)], float)
    k = int(d.size)
    out = {"K": k, "wins": int((d > 0).sum()), "mean": float(d.mean()) if k else None,
           "sd": float(d.std(ddof=1)) if k > 1 else None, "min": float(d.min()) if k else None,
           "max": float(d.max()) if k else None, "t": None, "df": k - 1 if k > 1 else None, "p": None,
           "ratio": (n_test / n_train) if n_train and n_test else None}
    if k < 2 or not out["sd"] or out["ratio"] is None:
        return out
    se = math.sqrt((1.0 / k + out["ratio"]) * out["sd"] ** 2)
    out["t"] = out["mean"] / se
    out["p"] = float(2 * sps.t.sf(abs(out["t"]), k - 1))
    return out


def verdict(diff: float, low: float, high: float, p: float | None, alpha: float = 0.05,
            floor: float | None = None) -> str:
    """The comparison in plain words; `floor`: the smallest p the test behind `p` can give (a bootstrap's)."""
    if diff is None or not np.isfinite(diff):
        return "not comparable: no AUC on these images"
    interval = f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]"
    if p is None or not np.isfinite(p):
        return f"{interval}: no test"
    ptxt = p_text(p, floor)
    if p < alpha:
        return f"{interval}, {ptxt}: significant at the {alpha:g} level"
    return f"{interval}, {ptxt}: not significant at this size"
