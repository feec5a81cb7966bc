import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from engine.metrics import _weighted_auc, bootstrap_auc, per_class_auc, roc_curves


def _data(n=400, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(float)
    p = np.round(y * 0.4 + rng.random((n, c)), 2)  # rounding makes ties
    return y, p


def test_auc_equals_sklearn_and_skips_unknown_targets():
    y, p = _data()
    y[::7, 1] = np.nan
    got = per_class_auc(y, p)
    for c in range(4):
        m = ~np.isnan(y[:, c])
        assert got[c] == pytest.approx(roc_auc_score(y[m, c], p[m, c]), abs=1e-12)


def test_auc_is_nan_when_a_class_has_one_kind_only():
    y, p = _data()
    y[:, 2] = 0
    assert np.isnan(per_class_auc(y, p)[2])


def test_weighted_auc_with_unit_and_integer_weights_matches_sklearn():
    y, p = _data(c=1)
    w = np.random.default_rng(1).integers(0, 4, (3, len(y))).astype(float)
    got = _weighted_auc(y[:, 0], p[:, 0], np.vstack([np.ones(len(y)), w]))
    assert got[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    for k in range(3):
        rep = np.repeat(np.arange(len(y)), w[k].astype(int))
        assert got[k + 1] == pytest.approx(roc_auc_score(y[rep, 0], p[rep, 0]))


def test_bootstrap_intervals_contain_the_point_estimate():
    y, p = _data(n=600)
    groups = np.arange(600) // 3  # three images per patient
    b = bootstrap_auc(y, p, groups, n=300, seed=0)
    assert np.all(b["low"] <= b["auc"]) and np.all(b["auc"] <= b["high"])
    assert b["mean_low"] <= b["mean"] <= b["mean_high"]
    assert np.all(b["high"] - b["low"] > 0.01)


def test_roc_curves_are_records_per_defined_class():
    y, p = _data()
    curves = roc_curves(y, p, ["a", "b", "c", "d"])
    assert [c.class_name for c in curves] == ["a", "b", "c", "d"]
    r = curves[0].records()
    assert r[0]["fpr"] == 0 and r[-1]["tpr"] == 1 and r[0]["class"] == "a"
