import math

import numpy as np
import pytest

from conftest import write_covid
from engine.data import COVID19Collection, covid_status, patient_overlap


@pytest.mark.parametrize("finding,expected", [
    ("COVID-19", 1.0), ("COVID-19, ARDS", 1.0), ("Pneumonia/Viral/COVID-19", 1.0), ("SARS", 0.0),
    ("Pneumonia/Viral/SARS", 0.0), ("No Finding", 0.0), ("Streptococcus", 0.0), ("todo", math.nan), ("", math.nan),
])
def test_covid_status(finding, expected):
    got = covid_status(finding)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize("schema", ["2020", "current"])
def test_both_schemas_load_with_the_same_counts(tmp_path, schema):
    ds = COVID19Collection(write_covid(tmp_path / schema, schema=schema))
    assert ds.group_counts() == {"COVID-19": 13, "other": 7, "unlabelled": 2}
    assert ds.skipped["missing_images"] == 1
    assert ds.skipped["duplicate_files"] == 1
    assert ds.skipped["not_xray"] == 1 and ds.skipped["lateral"] == 1 and ds.skipped["not_frontal"] == 0
    assert ds.frame["image"].is_unique


def test_unlabelled_rows_are_nan_and_can_be_excluded(tiny_covid):
    ds = COVID19Collection(tiny_covid)
    todo = ds.frame["label_group"] == "unlabelled"
    assert np.isnan(ds.targets[todo.to_numpy(), 0]).all()
    sup = COVID19Collection(tiny_covid, include_unlabelled=False)
    assert len(sup) == len(ds) - 2 and not np.isnan(sup.targets).any()


def test_patient_wise_split_without_overlap(tiny_covid):
    ds = COVID19Collection(tiny_covid, seed=5)
    assert patient_overlap(ds.frame["patient_id"], ds.frame["split"]) == 0
    assert set(ds.frame["split"]) == {"train", "val", "test"}


def test_views_are_configurable(tiny_covid):
    assert len(COVID19Collection(tiny_covid, views=("PA", "L"))) == len(COVID19Collection(tiny_covid)) + 1


def test_missing_columns_are_named(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metadata.csv").write_text("patientid,finding,filename\n1,COVID-19,a.png\n")
    with pytest.raises(ValueError, match="view, modality"):
        COVID19Collection(tmp_path / "c")


def test_paths_outside_the_root_are_rejected_not_looked_up(tmp_path):
    """metadata.csv names files by folder and filename: "../" or absolute names are counted as
    outside the root and never checked for existence (no oracle, nothing read from elsewhere)."""
    from conftest import xray_png

    root = write_covid(tmp_path / "covid")
    secret = xray_png(tmp_path / "secret.png")
    with open(root / "metadata.csv", "a") as fh:
        fh.write('501,0,M,50,"COVID-19",Y,PA,X-ray,2020,here,images,../../secret.png,,,,,,\n')
        fh.write(f'502,0,M,50,"COVID-19",Y,PA,X-ray,2020,here,images,{secret},,,,,,\n')
        fh.write('503,0,M,50,"COVID-19",Y,PA,X-ray,2020,here,..,secret.png,,,,,,\n')
    ds = COVID19Collection(root, include_unlabelled=True)
    assert ds.skipped["outside_root"] == 3
    assert not any("secret" in p for p in ds.frame["path"])
