"""The same film under two names: found by content (pHash), kept in one split, reported."""
import io
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from engine.data import COVID19Collection, patient_overlap
from engine.data.covid import view_key
from engine.data.duplicates import cross_pairs, duplicate_pairs, image_hashes, keep_together
from engine.data.summary import summarize_covid


def _pair_names(ds):
    return {frozenset((r["image_a"], r["image_b"])) for r in ds.duplicates["pairs_list"]}


def test_the_packs_named_duplicates_are_found_and_kept_in_one_split(data_pack):
    ds = COVID19Collection(data_pack / "covid")
    pairs = _pair_names(ds)
    assert frozenset(("AR-1.jpg", "extubation-1.jpg")) in pairs
    shared = [r for r in ds.duplicates["pairs_list"] if {r["patient_a"], r["patient_b"]} == {"covid-97", "covid-178"}]
    assert len(shared) == 4
    assert ds.duplicates["pairs_across_splits_before"] > 0  # the patient-wise split alone leaked
    split = dict(zip(ds.frame["image"], ds.frame["split"]))
    for r in ds.duplicates["pairs_list"]:
        assert split[r["image_a"]] == split[r["image_b"]], r
    # only the linked groups moved: every other image keeps the plain patient-wise split
    plain = COVID19Collection(data_pack / "covid", dedupe=False)
    changed = (plain.frame["split"].to_numpy() != ds.frame["split"].to_numpy()).sum()
    assert changed == ds.duplicates["images_moved"] > 0
    assert plain.fingerprint() != ds.fingerprint()
    assert patient_overlap(ds.frame["patient_id"], ds.frame["split"]) == 0


def test_resized_and_reencoded_copies_are_found(tmp_path, data_pack):
    """A copy shrunk to 60 %, saved as JPEG at quality 70 under another patient, is the same film;
    two different patients' films are not."""
    src = data_pack / "covid" / "images"
    names = sorted(p.name for p in src.iterdir())[:40]
    copies = []
    for n in names[:5]:
        img = Image.open(src / n).convert("L")
        small = img.resize((int(img.width * 0.6), int(img.height * 0.6)))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=70)
        out = tmp_path / f"copy-{n}.jpg"
        out.write_bytes(buf.getvalue())
        copies.append(str(out))
    hashes, bad = image_hashes([str(src / n) for n in names] + copies)
    assert not bad
    found = {(i, j) for i, j, _ in duplicate_pairs(hashes)}
    for k in range(5):
        assert (k, 40 + k) in found
    assert len(cross_pairs(hashes[:5], hashes[40:])) >= 5


def test_keep_together_moves_only_linked_groups_and_never_grows_test_on_a_tie():
    pids = ["a", "a", "b", "c", "d", "e"]
    splits = ["train", "train", "test", "val", "test", "val"]
    # a's first image = b's image (train 2 vs test 1 -> train); d = e (test 1, val 1 -> val on a tie)
    new, rep = keep_together(pids, splits, [(0, 2, 0), (4, 5, 3)])
    assert list(new) == ["train", "train", "train", "val", "val", "val"]
    assert rep["images_moved"] == 2 and rep["groups_moved"] == 2 and rep["pairs_across_splits_before"] == 2


def test_views_match_case_and_space_insensitively_and_drops_are_counted(tmp_path, data_pack):
    assert view_key(" AP  erect ") == view_key("AP Erect") == "ap erect"
    root = tmp_path / "covid"
    (root / "images").mkdir(parents=True)
    img = sorted((data_pack / "covid" / "images").iterdir())[0]
    rows = []
    for k, (view, modality) in enumerate([("AP erect", "X-ray"), ("ap  supine", "X-ray"), ("PA", "X-ray"),
                                          ("", "X-ray"), ("L", "X-ray"), ("Axial", "CT"), ("Coronal", "X-ray")]):
        shutil.copy(img, root / "images" / f"{k}.jpg")
        rows.append({"patientid": k, "finding": "COVID-19", "view": view, "modality": modality,
                     "folder": "images", "filename": f"{k}.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    s = summarize_covid(root)
    ds = COVID19Collection(root, dedupe=False)
    assert sorted(ds.frame["view"]) == ["AP Erect", "AP Supine", "PA"]
    assert s["skipped"]["no_view"] == 1 and s["skipped"]["lateral"] == 1
    assert s["skipped"]["not_xray"] == 1 and s["skipped"]["not_frontal"] == 1
    # seven copies of one film under seven patients: all in one split
    assert s["duplicates"]["pairs"] == 3 and len(set(COVID19Collection(root).frame["split"])) == 1
    assert np.all(ds.targets == 1)
