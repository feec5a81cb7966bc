"""Issue 24's study kinds on the real pack: the COVID-19 collection's finding hierarchy (viral vs
bacterial pneumonia), one origin held out (internal-external validation), the training fraction of a
learning curve, and the 15-class task's collection-only COVID-19 AUC."""
import json

import numpy as np
import pytest

from conftest import REPO
from engine.config import ConfigError, from_preset
from engine.constants import PNEUMONIA_LABELS
from engine.data.covid import COVID19Collection, eligible_origins, pneumonia_type
from engine.data.tasks import build_datasets
from engine.runs.registry import Registry
from engine.study.spec import SpecError, load_spec


@pytest.mark.parametrize("finding,kind", [
    ("COVID-19", 0), ("COVID-19, ARDS", 0), ("Pneumonia/Viral/COVID-19", 0),  # both schemas of the collection
    ("SARS", 1), ("Varicella", 1), ("Influenza", 1), ("Pneumonia/Viral/SARS", 1), ("Pneumonia/Viral/Herpes ", 1),
    ("Streptococcus", 2), ("Mycoplasma Bacterial Pneumonia", 2), ("E.Coli", 2), ("Pneumonia/Bacterial/Klebsiella", 2),
    ("Pneumocystis", 3), ("Pneumonia/Fungal/Aspergillosis", 3), ("No Finding", 4),
    ("ARDS", -1), ("Pneumonia", -1), ("Lipoid", -1), ("todo", -1), ("", -1), ("Pneumonia/Aspiration", -1),
])
def test_the_finding_hierarchy_maps_both_schemas(finding, kind):
    assert pneumonia_type(finding) == kind


def test_the_pneumonia_task_counts_the_packs_findings_and_leaves_out_what_is_outside(data_pack):
    """The pack README's counts: COVID-19 415 + 12 with ARDS, other viral SARS 16 + Varicella 4 + Influenza 1,
    bacterial 11 + 7 + 4 + 4 + 3 + 2, fungal Pneumocystis 12, No Finding 19; ARDS, Pneumonia and Lipoid
    (17) are outside the hierarchy and counted, never silently relabelled."""
    ds = COVID19Collection(data_pack / "covid", include_unlabelled=False, labels="pneumonia", dedupe=False)
    assert ds.class_names == list(PNEUMONIA_LABELS) or tuple(ds.class_names) == PNEUMONIA_LABELS
    assert dict(zip(PNEUMONIA_LABELS, np.nansum(ds.targets, axis=0).astype(int))) == {
        "COVID-19": 427, "Other viral": 21, "Bacterial": 31, "Fungal": 12, "No Finding": 19}
    assert (np.nansum(ds.targets, axis=1) == 1).all()  # one class per image
    assert ds.skipped["not_in_hierarchy"] == 17 and ds.skipped["unlabelled"] == 28
    cfg = from_preset("pneumonia-scratch", {"covid_root": str(data_pack / "covid")})
    parts = build_datasets(cfg)
    for split, part in parts.items():  # every class in every split (the split is stratified by class)
        assert (np.nansum(part.targets, axis=0) > 0).all(), split
    patients = [set(p.frame["patient_id"]) for p in parts.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_an_origin_held_out_is_the_whole_test_split_and_nothing_of_it_is_trained_on(data_pack):
    cfg = from_preset("covid-scratch", {"covid_root": str(data_pack / "covid"), "holdout_source": "eurorad.org"})
    parts = build_datasets(cfg)
    test, train, val = parts["test"], parts["train"], parts["val"]
    whole = COVID19Collection(data_pack / "covid", include_unlabelled=False)
    assert (test.frame["source"] == "eurorad.org").sum() == (whole.frame["source"] == "eurorad.org").sum() == 63
    assert not (train.frame["source"] == "eurorad.org").any() and not (val.frame["source"] == "eurorad.org").any()
    # a patient (or a film shared across patients) with an image from the origin is tested, not trained on
    assert not set(test.frame["patient_id"]) & (set(train.frame["patient_id"]) | set(val.frame["patient_id"]))
    assert not set(test.frame["cluster_id"]) & set(train.frame["cluster_id"])
    assert len(train) + len(val) + len(test) == len(whole)  # the other origins' test images join training
    with pytest.raises(ValueError, match="no labelled image .* comes from origin 'nowhere.example'; origins: "
                                         "radiopaedia.org \\(99\\)"):
        build_datasets(from_preset("covid-scratch", {"covid_root": str(data_pack / "covid"),
                                                     "holdout_source": "nowhere.example"}))
    with pytest.raises(ConfigError, match="holdout_source.*only the covid, pneumonia, manifest tasks hold out a source"):
        from_preset("nih-resnet50-scratch", {"holdout_source": "eurorad.org"})


def test_the_eligible_origins_have_enough_images_of_both_labels(data_pack):
    ds = COVID19Collection(data_pack / "covid", include_unlabelled=False, dedupe=False)
    assert eligible_origins(ds, 30, 5) == ["radiopaedia.org", "github.com", "eurorad.org", "sciencedirect.com",
                                           "pubs.rsna.org"]
    assert eligible_origins(ds, 30, 9) == ["radiopaedia.org", "eurorad.org", "pubs.rsna.org"]  # github.com: 8 negatives


def test_a_training_fraction_keeps_that_share_of_patients_per_class_nested(data_pack):
    base = {"covid_root": str(data_pack / "covid")}
    full = build_datasets(from_preset("pneumonia-scratch", base))
    quarter = build_datasets(from_preset("pneumonia-scratch", {**base, "train_fraction": 0.25}))
    half = build_datasets(from_preset("pneumonia-scratch", {**base, "train_fraction": 0.5}))
    n = full["train"].frame["patient_id"].nunique()
    assert abs(quarter["train"].frame["patient_id"].nunique() - n / 4) <= 5
    assert set(quarter["train"].frame["patient_id"]) <= set(half["train"].frame["patient_id"])  # nested
    assert (np.nansum(quarter["train"].targets, axis=0) > 0).all()  # every class keeps a patient
    for split in ("val", "test"):  # only training shrinks
        assert quarter[split].fingerprint() == full[split].fingerprint()
    with pytest.raises(ConfigError, match="train_fraction"):
        from_preset("covid-scratch", {**base, "train_fraction": 0.0})


def test_the_pack_scale_holds_out_each_eligible_origin_once(data_pack, tiny_nih, monkeypatch, tmp_path):
    """One row per eligible origin, each run in repeat 0 only; learning-curve and pneumonia rows run
    in every repeat; a comparison may not name a row that runs once."""
    import engine.runs.jobs as jobs
    import engine.study.graph as graph
    from engine.study.graph import plan

    monkeypatch.setattr(jobs, "schedule", lambda reg=None: [])
    monkeypatch.setattr(graph, "schedule", lambda reg=None: [])
    monkeypatch.setattr(graph, "imagenet_missing", lambda arch, fetch: "no weights")
    monkeypatch.setattr(graph, "xrv_missing", lambda init, fetch: "no weights")
    spec = load_spec("pack", data_pack / "covid")
    held = [e for e in spec.experiments if e.table == "Leave one source out"]
    assert [e.overrides["holdout_source"] for e in held] == ["radiopaedia.org", "github.com", "eurorad.org",
                                                            "sciencedirect.com", "pubs.rsna.org"]
    assert all(not e.repeats and e.base == "t2-from-nih" and e.init_from == spec.experiment("t2-from-nih").init_from
               for e in held)
    reg = Registry()
    cells = plan(spec, "s", reg, {"nih": tiny_nih, "covid": data_pack / "covid"}, submit=True, repeats=2)
    names = {c.name for c in cells}
    assert "s-t2-from-nih-out-eurorad-org" in names and "s-r1-t2-from-nih-out-eurorad-org" not in names
    assert {"s-r1-t2-scratch-f25", "s-r1-fw-pneumonia-scratch"} <= names
    row = reg.get("s-t2-from-nih-out-eurorad-org")
    assert row.config["data"]["holdout_source"] == "eurorad.org" and row.depends_on == "s-pack-densenet121-scratch"
    assert reg.get("s-r1-t2-scratch-f25").config["data"]["train_fraction"] == 0.25
    raw = json.loads((REPO / "engine" / "study" / "scales" / "pack.json").read_text())
    raw["experiments"][0]["repeats"] = False
    (tmp_path / "once.json").write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="names an experiment that runs once"):
        load_spec(str(tmp_path / "once.json"))


def test_the_15_class_covid_auc_comes_with_its_collection_only_auc_and_interval(tmp_path):
    """The 15-class task's COVID-19 AUC mixes collections: all positives from the COVID-19 collection,
    most negatives from ChestX-ray14, so naming the collection scores well alone. The collection-only
    AUC (positives and negatives from the collection) is computed on those images with a
    patient-bootstrap interval, beside what the collection's name alone gets."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from engine.runs.predictions import Predictions
    from engine.study.results import collection_only

    rng = np.random.default_rng(0)
    n_nih, n_cov = 120, 60
    dataset = np.array(["nih"] * n_nih + ["covid"] * n_cov)
    y = np.r_[np.zeros(n_nih), (rng.uniform(size=n_cov) < 0.7).astype(float)]
    score = np.where(dataset == "covid", 0.6, 0.2) + rng.normal(0, 0.1, size=len(y))  # says "collection", not COVID
    info = pd.DataFrame({"image": [f"{k}.png" for k in range(len(y))], "dataset": dataset,
                         "patient_id": [f"p{k // 2}" for k in range(len(y))]})
    reg = Registry()
    reg.create("c15", {"data": {"task": "combined15"}}, "combined15")
    Predictions.build(info, ["COVID-19"], y[:, None], score[:, None]).write(reg.folder("c15").predictions("test"))
    out = collection_only(reg, "c15", n_boot=200)
    inside = dataset == "covid"
    assert out["auc"] == pytest.approx(roc_auc_score(y[inside], score[inside]))
    assert out["images"] == n_cov and out["positives"] + out["negatives"] == n_cov
    assert out["low"] < out["auc"] < out["high"]
    assert out["source_only_auc"] == pytest.approx(roc_auc_score(y, inside.astype(float)))
    assert roc_auc_score(y, score) > out["auc"] + 0.2  # the overall AUC is mostly the collection's name
    assert f"{out['auc']:.3f} [{out['low']:.3f}, {out['high']:.3f}]" in out["text"]
    assert collection_only(reg, "no-such-run") is None
