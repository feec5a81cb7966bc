import numpy as np

from engine.data import balanced_selection, patient_overlap, split_by_patient


def test_no_patient_in_two_splits_and_shares_close():
    rng = np.random.default_rng(0)
    pids = rng.integers(0, 500, 3000)
    s = split_by_patient(pids, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert patient_overlap(pids, s) == 0
    for name, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs((s == name).mean() - share) < 0.02


def test_stratified_split_keeps_the_class_share_in_each_split():
    pids = np.arange(400)
    strata = np.where(pids < 80, "pos", "neg")
    s = split_by_patient(pids, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0, strata=strata)
    for name in ("train", "val", "test"):
        assert abs((strata[s == name] == "pos").mean() - 0.2) < 0.02


def test_split_is_deterministic_per_seed():
    pids = np.arange(100) // 3
    a = split_by_patient(pids, {"train": 0.8, "test": 0.2}, seed=7)
    assert (a == split_by_patient(pids, {"train": 0.8, "test": 0.2}, seed=7)).all()
    assert (a != split_by_patient(pids, {"train": 0.8, "test": 0.2}, seed=8)).any()


def test_patient_overlap_counts_leaking_patients():
    assert patient_overlap(["a", "a", "b", "c", "c"], ["train", "test", "train", "val", "val"]) == 1


def test_balanced_selection_reaches_the_minimum_where_possible():
    rng = np.random.default_rng(0)
    t = (rng.random((5000, 4)) < np.array([0.3, 0.1, 0.02, 0.005])).astype(np.float32)
    idx = balanced_selection(t, 50, seed=0)
    counts = t[idx].sum(axis=0)
    available = t.sum(axis=0)
    assert np.all(counts >= np.minimum(50, available))
    assert len(np.unique(idx)) == len(idx)
    negatives = (t[idx].sum(axis=1) == 0).sum()
    assert negatives == 50
