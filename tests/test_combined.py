import numpy as np

from engine.constants import COMBINED15_LABELS
from engine.data import COVID19Collection, Combined15, NIHChestXray14, patient_overlap


def test_combined15_on_fixtures_has_15_classes_and_unknown_nih_labels_for_covid(tiny_nih, tiny_covid):
    ds = Combined15(NIHChestXray14(tiny_nih), COVID19Collection(tiny_covid), min_per_class=3)
    assert ds.class_names == COMBINED15_LABELS and ds.targets.shape[1] == 15
    cov = ds.frame["dataset"].to_numpy() == "covid"
    assert np.isnan(ds.targets[cov, :14]).all() and not np.isnan(ds.targets[cov, 14]).any()
    assert (ds.targets[~cov, 14] == 0).all()
    assert "unlabelled" not in set(ds.frame.loc[cov, "label_group"])


def test_combined15_on_the_pack_is_balanced_where_data_allows(data_pack):
    nih, covid = NIHChestXray14(data_pack / "nih"), COVID19Collection(data_pack / "covid")
    ds = Combined15(nih, covid, min_per_class=40)
    train = ds.split("train")
    counts = train.label_counts()
    avail_nih = nih.split("train").label_counts()
    avail_cov = int((covid.split("train").frame["label_group"] == "COVID-19").sum())
    for name in COMBINED15_LABELS:
        avail = avail_cov if name == "COVID-19" else avail_nih[name]
        assert counts[name] >= min(40, avail), name
    assert patient_overlap(ds.frame["patient_id"], ds.frame["split"]) == 0
    assert len(train) < len(nih.split("train")) + len(covid.split("train"))  # a subset, not everything
