"""DeLong's test against a brute-force computation of the same statistic and a published worked
example; the paired patient bootstrap of an AUC difference."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from engine.stats import delong_test, midranks, paired_bootstrap, verdict


def brute_delong(y, a, b):
    """DeLong 1988 written out: the Heaviside kernel over every (positive, negative) pair."""
    y = np.asarray(y, bool)
    comps = []
    for s in (a, b):
        pos, neg = s[y], s[~y]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (A, v10a, v01a), (B, v10b, v01b) = comps
    m, n = y.sum(), (~y).sum()
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (A - B) / math.sqrt(var)
    return A, B, z, math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.parametrize("n,ties", [(20, False), (57, True), (300, True), (1000, False)])
def test_fast_delong_equals_the_brute_force_statistic(n, ties):
    rng = np.random.default_rng(n)
    y = rng.random(n) < 0.35
    y[:2] = [True, False]
    a = rng.normal(size=n) + y
    b = 0.6 * a + rng.normal(size=n) + 0.5 * y
    if ties:  # rounded scores: many ties within and across the classes
        a, b = np.round(a, 1), np.round(b, 1)
    r = delong_test(y, a, b)
    A, B, z, p = brute_delong(y, a, b)
    assert abs(r["auc_a"] - A) < 1e-9 and abs(r["auc_b"] - B) < 1e-9
    assert abs(r["z"] - z) < 1e-9 and abs(r["p"] - p) < 1e-9
    assert abs(r["auc_a"] - roc_auc_score(y, a)) < 1e-12
    assert r["low"] < r["diff"] < r["high"]


def test_published_worked_example_hanley_mcneil_1982():
    """Hanley & McNeil, Radiology 143 (1982) 29-36, Table 1: 5-point ratings of 58 normal and 51
    abnormal CT images; published AUC 0.893, standard error 0.032 (their exponential approximation;
    DeLong's nonparametric estimate on the same data is 0.0307)."""
    neg = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    pos = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    s = np.r_[neg, pos].astype(float)
    r = delong_test(y, s, np.zeros_like(s))  # against a useless rater (AUC 0.5, no variance)
    assert round(r["auc_a"], 3) == 0.893 and r["auc_b"] == 0.5
    assert abs(r["se"] - 0.032) < 0.002
    assert abs(r["se"] - 0.030724) < 1e-5


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_identical_models_do_not_differ():
    rng = np.random.default_rng(0)
    y = rng.random(80) < 0.5
    s = rng.random(80)
    r = delong_test(y, s, s.copy())
    assert r["diff"] == 0 and r["p"] == 1.0
    t = np.c_[y.astype(float)]
    b = paired_bootstrap(t, np.c_[s], np.c_[s], n=200)
    assert b["diff"][0] == 0 and b["p"][0] == 1.0 and b["low"][0] == b["high"][0] == 0


def test_paired_bootstrap_resamples_patients_and_agrees_with_delong():
    rng = np.random.default_rng(3)
    n = 400
    patients = np.repeat(np.arange(n // 2), 2)  # two images per patient
    y = np.repeat(rng.random(n // 2) < 0.4, 2).astype(float)
    good = y + rng.normal(size=n) * 0.8
    weak = y + rng.normal(size=n) * 2.0
    targets = np.c_[y, y]
    targets[:10, 1] = np.nan  # unknown labels are left out of class 1
    b = paired_bootstrap(targets, np.c_[good, good], np.c_[weak, weak], patients, n=500, seed=1)
    d = delong_test(y.astype(bool), good, weak)
    assert abs(b["diff"][0] - d["diff"]) < 1e-12
    assert b["low"][0] < d["diff"] < b["high"][0] and b["low"][0] > 0  # clearly better
    assert b["p"][0] < 0.01 and d["p"] < 0.01
    assert b["mean_low"] > 0 and b["mean_p"] < 0.01
    same = paired_bootstrap(targets, np.c_[good, good], np.c_[good, good], patients, n=100)
    assert same["mean_diff"] == 0


def test_verdicts_speak_plainly():
    assert verdict(0.11, -0.04, 0.25, 0.14) == "+0.11 [-0.04, +0.25], p = 0.14: not significant at this size"
    assert "significant at the 0.05 level" in verdict(0.2, 0.1, 0.3, 0.001)
    assert verdict(float("nan"), 0, 0, None).startswith("not comparable")


def test_the_clustered_delong_test_counts_a_patients_images_once():
    """Issue 24: DeLong's p was image-level beside a patient-level interval. With every case present
    twice in one cluster (two films of one patient), the plain test's standard error shrinks by
    sqrt(2) as if the evidence had doubled; Obuchowski's clustered covariance keeps the original."""
    import numpy as np

    from engine.stats import delong_test

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(bool)
    a, b = y + rng.normal(size=200), 0.5 * y + rng.normal(size=200)
    once = delong_test(y, a, b)
    twice = [np.repeat(v, 2) for v in (y, a, b)]
    plain = delong_test(*twice)
    clustered = delong_test(*twice, clusters=np.repeat(np.arange(200), 2))
    assert plain["se"] == pytest.approx(once["se"] / np.sqrt(2), rel=0.02)
    assert clustered["clustered"] and clustered["se"] == pytest.approx(once["se"], rel=0.02)
    assert clustered["p"] > plain["p"]
    singletons = delong_test(y, a, b, clusters=np.arange(200))  # one image per patient: DeLong's own test
    assert not singletons["clustered"] and singletons["se"] == once["se"]


def _obuchowski_brute_force(y, scores, clusters):
    """Obuchowski (Biometrics 53, 1997, eqs. 3-6), written out from the paper with loops: per cluster,
    the sums of the placement values over its positives (X_i) and negatives (Y_i); S10 and S01 with the
    factors I10/(I10-1) and I01/(I01-1) over the clusters holding a positive (a negative); S11 with I/(I-1)."""
    import numpy as np

    y = np.asarray(y, bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    ids = sorted(set(clusters))
    out_auc, comps = [], []
    for sc in scores:
        def psi(a, b):
            return 1.0 if a > b else 0.5 if a == b else 0.0
        theta = sum(psi(sc[i], sc[j]) for i in pos for j in neg) / (len(pos) * len(neg))
        v10 = {i: sum(psi(sc[i], sc[j]) for j in neg) / len(neg) for i in pos}
        v01 = {j: sum(psi(sc[i], sc[j]) for i in pos) / len(pos) for j in neg}
        xs = {c: (sum(v10[i] for i in pos if clusters[i] == c), sum(1 for i in pos if clusters[i] == c)) for c in ids}
        ys = {c: (sum(v01[j] for j in neg if clusters[j] == c), sum(1 for j in neg if clusters[j] == c)) for c in ids}
        out_auc.append(theta)
        comps.append((theta, xs, ys))
    m, n, big_i = len(pos), len(neg), len(ids)
    i10 = sum(1 for c in ids if comps[0][1][c][1] > 0)
    i01 = sum(1 for c in ids if comps[0][2][c][1] > 0)
    k = len(scores)
    cov = np.zeros((k, k))
    for a in range(k):
        for b in range(k):
            ta, xa, ya = comps[a]
            tb, xb, yb = comps[b]
            s10 = i10 / ((i10 - 1) * m) * sum((xa[c][0] - xa[c][1] * ta) * (xb[c][0] - xb[c][1] * tb) for c in ids)
            s01 = i01 / ((i01 - 1) * n) * sum((ya[c][0] - ya[c][1] * ta) * (yb[c][0] - yb[c][1] * tb) for c in ids)
            s11 = big_i / (big_i - 1) * sum((xa[c][0] - xa[c][1] * ta) * (yb[c][0] - yb[c][1] * tb) for c in ids)
            s11t = big_i / (big_i - 1) * sum((xb[c][0] - xb[c][1] * tb) * (ya[c][0] - ya[c][1] * ta) for c in ids)
            cov[a, b] = s10 / m + s01 / n + (s11 + s11t) / (m * n)
    return np.array(out_auc), cov


def test_the_clustered_delong_covariance_uses_obuchowskis_own_factors():
    """Issue 33: I10/(I10-1) and I01/(I01-1) for S10 and S01 (clusters holding a positive / a negative),
    I/(I-1) for S11. Checked against the formula written out with loops, on clusters of uneven size where
    few clusters hold negatives (the factors then differ most), and against DeLong with one image per cluster."""
    import numpy as np

    from engine.stats import clustered_delong_covariance, delong_covariance

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 4, 40)
    clusters = np.repeat(np.arange(40), sizes)
    sick = rng.random(40) < 0.75  # most patients positive: few negative clusters, as on the pack's test set
    y = np.repeat(sick, sizes) & (rng.random(len(clusters)) < 0.9)
    scores = np.vstack([y + rng.normal(size=len(y)), 0.6 * y + rng.normal(size=len(y))])
    aucs, cov = clustered_delong_covariance(y, scores, clusters)
    ref_aucs, ref_cov = _obuchowski_brute_force(y, scores, list(clusters))
    assert np.allclose(aucs, ref_aucs) and np.allclose(cov, ref_cov, rtol=1e-10, atol=1e-14)
    n_neg_clusters = len(set(clusters[~y]))
    assert n_neg_clusters < 20  # the case the old I/(I-1) factor got wrong
    # one image per cluster: DeLong's covariance exactly
    single_aucs, single_cov = clustered_delong_covariance(y, scores, np.arange(len(y)))
    plain_aucs, plain_cov = delong_covariance(y, scores)
    assert np.allclose(single_aucs, plain_aucs) and np.allclose(single_cov, plain_cov, rtol=1e-12)


def test_sample_size_for_a_paired_auc_difference():
    """Issue 24: "not significant at this size" comes with "would need about N", from Hanley and
    McNeil's variance and the observed correlation of the two AUCs."""
    import math

    from engine.stats import hanley_mcneil_variance, images_needed

    q1, q2 = 0.9 / 1.1, 2 * 0.81 / 1.9  # Hanley and McNeil's Q1, Q2 for A = 0.9, by hand
    assert hanley_mcneil_variance(0.9, 50, 50) == pytest.approx((0.09 + 49 * (q1 - 0.81) + 49 * (q2 - 0.81)) / 2500)
    need = images_needed(0.80, 0.75, 30, 70, r=0.4)
    n, pos = need["images"], need["positives"]
    assert pos == round(n * 0.3) and need["negatives"] == n - pos

    def se(total):
        p = round(total * 0.3)
        va, vb = hanley_mcneil_variance(0.80, p, total - p), hanley_mcneil_variance(0.75, p, total - p)
        return math.sqrt(va + vb - 2 * 0.4 * math.sqrt(va * vb))

    z = 1.959964 + 0.841621
    assert se(n) * z <= 0.05 < se(n - 1) * z  # the smallest size with 80 % power at alpha 0.05
    assert images_needed(0.80, 0.70, 30, 70, r=0.4)["images"] < n  # a larger difference needs fewer images
    assert images_needed(0.80, 0.75, 30, 70, r=0.8)["images"] < n  # so does a stronger pairing
    assert images_needed(0.8, 0.8, 30, 70) is None


def test_an_estimate_is_written_one_way_with_or_without_its_interval():
    from engine.text import estimate, number

    assert estimate(0.81234, 0.7901, 0.8333) == "0.812 [0.790, 0.833]"
    assert estimate(0.81234, 0.7901, 0.8333, 4) == "0.8123 [0.7901, 0.8333]"
    assert estimate(0.81234, None, None) == "0.812"         # no interval: the value alone
    assert estimate(0.81234, 0.79, None) == "0.812"         # half an interval is none
    assert estimate(None, 0.7, 0.9, missing="—") == "—"     # no value: nothing else is shown
    assert estimate(float("nan"), 0.7, 0.9) == "n/a"
    assert number(float("inf"), missing="–") == "–" and number(0.5) == "0.500"


def test_a_comparison_names_every_setting_that_differs_and_says_when_they_confound():
    """Issue 37, N3: a DenseNet-121 of 1 epoch against a ResNet-50 of 2 epochs differs in two settings."""
    from engine.evaluation.compare import design_text, setting_differences

    a = {"model": {"arch": "densenet121", "init": "scratch"}, "train": {"epochs": 1, "seed": 0},
         "data": {"image_size": 64, "split_seed": 0}}
    b = {"model": {"arch": "resnet50", "init": "scratch"}, "train": {"epochs": 2, "seed": 0},
         "data": {"image_size": 64, "split_seed": 0}}
    diffs = setting_differences(a, b)
    assert [(d["setting"], d["a"], d["b"]) for d in diffs] == [("architecture", "densenet121", "resnet50"),
                                                                 ("epochs", 1, 2)]
    assert "confounded" in design_text(diffs) and "architecture" in design_text(diffs)
    c = {**a, "model": {"arch": "densenet121", "init": "/ck/nih-smoke/best.pt"}}
    one = setting_differences(a, c)
    assert one == [{"setting": "init", "a": "scratch", "b": "run nih-smoke"}]
    assert design_text(one).endswith("measures the init")
    seeds = setting_differences(a, {**a, "train": {"epochs": 1, "seed": 1}})
    assert design_text(seeds).startswith("same settings but the seeds") and design_text([]).startswith("same settings")


def test_one_rule_for_the_resampling_unit_even_in_a_mixed_table():
    """Issue 33: the 15-class task's ChestX-ray14 rows have no cluster_id (NaN); evaluation read the column
    whenever it existed, so every ChestX-ray14 image became one unit "nan". One rule, in one home, used
    by evaluation and by the predictions table alike: the linked group where recorded, else the patient."""
    import numpy as np
    import pandas as pd

    from engine.runs.predictions import Predictions, resampling_units

    frame = pd.DataFrame({"image": [f"i{k}" for k in range(6)],
                          "patient_id": ["1", "2", "2", "3", "covid-9", "covid-10"],
                          "cluster_id": [np.nan, np.nan, np.nan, np.nan, "covid-9+covid-10", "covid-9+covid-10"]})
    units = resampling_units(frame)
    assert list(units) == ["1", "2", "2", "3", "covid-9+covid-10", "covid-9+covid-10"]
    assert len(set(units)) == 4
    preds = Predictions.build(frame, ["COVID-19"], np.zeros((6, 1)), np.zeros((6, 1)))
    assert list(preds.clusters) == list(units)
    assert list(resampling_units(frame.drop(columns=["cluster_id"]))) == ["1", "2", "2", "3", "covid-9", "covid-10"]


def test_evaluation_uses_the_one_rule():
    """The bootstrap in evaluate_split resamples by resampling_units, not by a column of its own."""
    import inspect

    from engine.training import evaluation

    src = inspect.getsource(evaluation.evaluate_split)
    assert "resampling_units(" in src and '"cluster_id"' not in src


@pytest.mark.parametrize("b,said", [(100, "p < 0.01"), (199, "p <= 0.005"), (200, "p < 0.005"), (999, "p <= 0.001"),
                                    (1000, "p < 0.001"), (1999, "p <= 0.0005"), (2000, "p < 0.0005")])
def test_a_bootstrap_p_at_its_floor_is_written_plainly(b, said):
    """Issue 33: "p < 0.0010" at B = 1000, "p < 0.010" at B = 100, and "<" for a p equal to its bound."""
    from engine.stats import p_floor, p_text

    assert p_text(p_floor(b), p_floor(b)) == said
    assert p_text(0.2, p_floor(b)) == "p = 0.20"  # above the floor: the value
