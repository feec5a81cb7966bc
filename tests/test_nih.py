import numpy as np
import pytest

from conftest import write_nih
from engine.constants import NIH_LABELS
from engine.data import NIHChestXray14, collate, patient_overlap


def test_labels_are_multi_hot_in_the_14_label_order(tiny_nih):
    ds = NIHChestXray14(tiny_nih)
    assert ds.class_names == NIH_LABELS
    row = ds.frame.index[ds.frame["findings"] == "Effusion|Mass"][0]
    expected = np.zeros(14, np.float32)
    expected[[NIH_LABELS.index("Effusion"), NIH_LABELS.index("Mass")]] = 1
    np.testing.assert_array_equal(ds.targets[row], expected)
    nf = ds.frame.index[ds.frame["findings"] == "No Finding"]
    assert len(nf) > 0 and ds.targets[nf].sum() == 0


def test_metadata_columns_are_kept(tiny_nih):
    ds = NIHChestXray14(tiny_nih)
    for col in ("patient_id", "view", "age", "sex", "split", "path"):
        assert col in ds.frame.columns
    assert set(ds.frame["sex"]) == {"M", "F"}


def test_official_test_list_is_the_test_split_and_val_is_carved_by_patient(tiny_nih):
    ds = NIHChestXray14(tiny_nih, val_fraction=0.25, seed=3)
    test_names = set((tiny_nih / "test_list.txt").read_text().split())
    assert set(ds.frame.loc[ds.frame["split"] == "test", "image"]) == test_names
    assert (ds.frame["split"] == "val").sum() > 0
    assert patient_overlap(ds.frame["patient_id"], ds.frame["split"]) == 0


def test_split_depends_on_seed_and_is_reproducible(tiny_nih):
    a = NIHChestXray14(tiny_nih, seed=1).frame["split"].tolist()
    assert a == NIHChestXray14(tiny_nih, seed=1).frame["split"].tolist()
    assert a != NIHChestXray14(tiny_nih, seed=2).frame["split"].tolist()


def test_absent_images_are_skipped_and_counted(tmp_path):
    rows = [(f"0000000{i}_000.png", "Mass", i) for i in range(6)]
    ds = NIHChestXray14(write_nih(tmp_path / "n", rows, absent={rows[1][0], rows[4][0]}))
    assert len(ds) == 4 and ds.skipped["missing_images"] == 2


def test_official_archive_layout_is_found(tmp_path):
    rows = [(f"0000000{i}_000.png", "No Finding", i) for i in range(6)]
    root = write_nih(tmp_path / "n", rows, layout="official")
    assert (root / "images_001" / "images").is_dir() and (root / "images_002" / "images").is_dir()
    assert len(NIHChestXray14(root)) == 6


def test_explicit_images_folder(tmp_path):
    rows = [(f"0000000{i}_000.png", "No Finding", i) for i in range(3)]
    root = write_nih(tmp_path / "n", rows)
    (root / "images").rename(tmp_path / "elsewhere")
    assert len(NIHChestXray14(root)) == 0
    assert len(NIHChestXray14(root, images_dir=tmp_path / "elsewhere")) == 3


def test_malformed_rows_and_unknown_labels_are_skipped_and_counted(tmp_path):
    rows = [(f"0000000{i}_000.png", "Mass", i) for i in range(3)]
    extra = ("broken_row_only_two,fields\n00000009_000.png,Mass|Covfefe,0,9,40,M,PA,1,1,1,1\n"
             "00000010_000.png,Mass,0,notanumber,40,M,PA,1,1,1,1\n")
    ds = NIHChestXray14(write_nih(tmp_path / "n", rows, extra_lines=extra))
    assert len(ds) == 3
    assert ds.skipped["malformed_rows"] == 2
    assert ds.skipped["unknown_label_rows"] == 1 and ds.skipped["unknown_labels"] == {"Covfefe": 1}


def test_wrong_root_and_wrong_csv_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NIHChestXray14(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="Data_Entry"):
        NIHChestXray14(tmp_path / "empty")
    (tmp_path / "empty" / "Data_Entry_2017.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not an NIH Data_Entry"):
        NIHChestXray14(tmp_path / "empty")


def test_corrupt_image_is_skipped_by_collate_and_reported(tiny_nih):
    from engine.data import build_transform

    ds = NIHChestXray14(tiny_nih, transform=build_transform(False, size=32))
    bad = ds.frame.at[2, "path"]
    with open(bad, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\ngarbage")
    batch = collate([ds[i] for i in range(4)])
    assert batch["images"].shape == (3, 3, 32, 32)
    assert batch["indices"].tolist() == [0, 1, 3]
    assert len(batch["errors"]) == 1 and bad in batch["errors"][0]


def test_metadata_parse_edge_cases_are_exact(tmp_path):
    from engine.data.nih import parse_metadata

    text = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,w,h\n"
            "a.png,Mass|Effusion,0,1,50,M,PA\n"
            "b.png, Mass | Nodule ,1,002,60,F,AP\n"
            "\n"                                   # blank line: malformed
            "c.png,Foo|Mass|Foo,0,3,40,M,PA\n"     # unknown label twice in one row
            "d.png,,0,4,40,M,PA\n"                 # no label
            "e.png,||,0,5,40,M,PA\n"               # no label
            "a.png,Hernia,0,1,50,M,PA\n"           # repeated image: first kept
            "f.png,No Finding,0,x7,40,M,PA\n"      # patient id not an integer
            ",No Finding,0,8,40,M,PA\n"            # no image name
            "g.png,No Finding,0,9\n"               # too few fields
            "i.png,No Finding|Mass,0,10,abc,M,PA\n"
            "j.png,Infiltration,0,11,45,M,PA,extra,fields\n"
            "c.png,Mass,0,3,40,M,PA\n")            # c.png's first row was rejected: this one is kept
    (tmp_path / "d.csv").write_text(text)
    frame, targets, skipped = parse_metadata(tmp_path / "d.csv")
    assert frame["image"].tolist() == ["a.png", "b.png", "i.png", "j.png", "c.png"]
    assert frame["patient_id"].tolist() == ["1", "2", "10", "11", "3"]
    assert skipped == {"malformed_rows": 4, "unknown_label_rows": 3, "duplicate_rows": 1,
                       "unknown_labels": {"Foo": 2, "<empty>": 2}}
    names = [[NIH_LABELS[k] for k in np.flatnonzero(t)] for t in targets]
    assert names == [["Effusion", "Mass"], ["Mass", "Nodule"], ["Mass"], ["Infiltration"], ["Mass"]]
    assert np.isnan(frame["age"].iloc[2]) and frame["age"].iloc[0] == 50
