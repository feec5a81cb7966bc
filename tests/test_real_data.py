"""The shared data pack: loader counts equal counts computed here independently from the CSVs."""
import csv
import json
import os

import pytest
import torch

from engine.cli import main
from engine.data import COVID19Collection, NIHChestXray14, build_cache, build_transform, collate, patient_overlap


@pytest.fixture(scope="module")
def nih(data_pack):
    return NIHChestXray14(data_pack / "nih")


@pytest.fixture(scope="module")
def covid(data_pack):
    return COVID19Collection(data_pack / "covid")


def test_nih_counts_match_the_csv_and_lists(nih, data_pack):
    files = set(os.listdir(data_pack / "nih" / "images"))
    with open(data_pack / "nih" / "Data_Entry_2017_v2020.csv", newline="") as fh:
        rows = {r[0]: r for r in csv.reader(fh) if r and r[0] != "Image Index"}
    present = files & set(rows)
    test_list = set((data_pack / "nih" / "test_list.txt").read_text().split())
    assert len(rows) == 112_120
    assert len(nih) == len(present) == 658
    assert nih.skipped["missing_images"] == 112_120 - 658
    assert (nih.frame["split"] == "test").sum() == len(present & test_list) == 89
    assert nih.frame["split"].isin(["train", "val"]).sum() == 569
    expected = {}
    for name in present:
        for lab in rows[name][1].split("|"):
            expected[lab] = expected.get(lab, 0) + 1
    counts = nih.label_counts()
    for lab, n in expected.items():
        if lab != "No Finding":
            assert counts[lab] == n, lab
    assert int((nih.targets.sum(1) == 0).sum()) == expected["No Finding"] == 114


def test_covid_counts_match_the_metadata(covid, data_pack):
    with open(data_pack / "covid" / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    frontal = {}
    for r in meta:
        if r["modality"] == "X-ray" and r["view"] in ("PA", "AP", "AP Supine", "AP Erect"):
            frontal.setdefault(r["filename"], r)
    present = {f: r for f, r in frontal.items() if (data_pack / "covid" / "images" / f).is_file()}
    pos = sum("COVID-19" in r["finding"] for r in present.values())
    todo = sum(r["finding"] == "todo" for r in present.values())
    assert len(covid) == len(present) == 555
    assert covid.skipped["missing_images"] == len(frontal) - len(present) == 11
    assert covid.group_counts() == {"COVID-19": pos, "other": len(present) - pos - todo, "unlabelled": todo}
    assert (pos, todo) == (427, 28)


def test_no_patient_in_two_splits(nih, covid):
    assert patient_overlap(nih.frame["patient_id"], nih.frame["split"]) == 0
    assert patient_overlap(covid.frame["patient_id"], covid.frame["split"]) == 0
    assert set(covid.frame["split"]) == {"train", "val", "test"}


def test_every_image_decodes_to_the_same_shape_and_dtype(nih, covid, tmp_path):
    for ds in (nih, covid):
        rep = build_cache(ds.frame["path"], tmp_path / ds.name, size=64, workers=2)
        assert rep.failed == [] and rep.decoded == len(ds)
    loader = torch.utils.data.DataLoader(covid.with_transform(build_transform(True, size=64)), batch_size=64,
                                         collate_fn=collate, num_workers=2)
    n = 0
    for batch in loader:
        assert batch["errors"] == []
        assert batch["images"].shape[1:] == (3, 64, 64) and batch["images"].dtype == torch.float32
        n += len(batch["indices"])
    assert n == 555


def test_data_summary_json_on_the_pack(data_pack, capsys):
    rc = main(["data", "summary", "--nih-root", str(data_pack / "nih"), "--covid-root", str(data_pack / "covid"),
               "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    n, c = out["nih"], out["covid"]
    assert (n["present"], n["missing"], n["patient_overlap"]) == (658, 111_462, 0)
    assert n["splits"]["test"]["images"] == 89
    assert n["splits"]["train"]["images"] + n["splits"]["val"]["images"] == 569
    assert n["labels"]["Hernia"] == 28
    assert (c["present"], c["missing"], c["patient_overlap"]) == (555, 11, 0)
    assert c["labels"] == {"COVID-19": 427, "other": 100, "unlabelled": 28}
    assert set(c["splits"]) == {"train", "val", "test"}
