"""The field's public datasets in their own published layouts (issue 34): CheXpert and MIMIC-CXR-JPG,
written here in their real schemas (column names and value codes from their documentation and from
torchxrayvision's readers) with the pack's real ChestX-ray14 images standing in for theirs."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli, train_tiny

from engine.data.public import CHEXPERT_OBSERVATIONS, PublicDatasetError, SHARED, read_chexpert, read_mimic

NIH_TO_CHEXPERT = {v: k for k, v in SHARED.items()}


def _pack_rows(data_pack, n=120):
    """Pack images that exist, with their ChestX-ray14 labels and patients."""
    meta = pd.read_csv(data_pack / "nih" / "Data_Entry_2017_v2020.csv")
    files = {p.name: p for p in (data_pack / "nih" / "images_64px").rglob("*.png")}
    meta = meta[meta["Image Index"].isin(files)].head(n).reset_index(drop=True)
    meta["file"] = meta["Image Index"].map(files)
    return meta


def _link(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


def _chexpert_layout(data_pack, root, n=120):
    """CheXpert-v1.0-small/{train,valid}.csv and train/patientNNNNN/studyK/viewK_frontal.jpg (PNG bytes in
    a .jpg name decode the same), labels from the images' own ChestX-ray14 findings: 1.0 where found,
    0.0 where not, -1.0 (uncertain) for every fifth row's Atelectasis, blank for Fracture."""
    meta = _pack_rows(data_pack, n)
    folder = root / "CheXpert-v1.0-small"
    rows = []
    for k, r in meta.iterrows():
        split = "valid" if k % 6 == 0 else "train"
        rel = f"CheXpert-v1.0-small/{split}/patient{int(r['Patient ID']):05d}/study{k + 1}/view1_frontal.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(r["file"], root / rel)
        found = set(r["Finding Labels"].split("|"))
        row = {"Path": rel, "Sex": {"M": "Male", "F": "Female"}[r["Patient Gender"]], "Age": int(r["Patient Age"]),
               "Frontal/Lateral": "Frontal", "AP/PA": r["View Position"]}
        for obs in CHEXPERT_OBSERVATIONS:
            nih = SHARED.get(obs)
            row[obs] = "" if nih is None else (1.0 if nih in found else 0.0)
        row["No Finding"] = 1.0 if found == {"No Finding"} else ""
        if k % 5 == 0:
            row["Atelectasis"] = -1.0
        row["_split"] = split
        rows.append(row)
    lateral = dict(rows[1], Path=rows[1]["Path"].replace("view1_frontal", "view2_lateral"), **{"Frontal/Lateral": "Lateral",
                                                                                            "AP/PA": ""})
    _link(root / rows[1]["Path"], root / lateral["Path"])
    rows.append(lateral)
    frame = pd.DataFrame(rows)
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
    frame[frame["_split"] == "train"][cols].to_csv(folder / "train.csv", index=False)
    frame[frame["_split"] == "valid"][cols].to_csv(folder / "valid.csv", index=False)
    return folder, meta


def test_chexpert_is_read_in_its_own_layout_with_the_uncertainty_policies(data_pack, tmp_path):
    folder, meta = _chexpert_layout(data_pack, tmp_path)
    classes = ["Atelectasis", "Effusion", "Fracture", "Hernia"]
    ds = read_chexpert(folder, classes)
    assert len(ds) == len(meta) and ds.skipped["lateral"] == 1  # frontal only by default
    assert ds.label_columns == {"Atelectasis": "Atelectasis", "Effusion": "Pleural Effusion", "Fracture": "Fracture"}
    assert np.isnan(ds.targets[:, 3]).all()  # Hernia: not a CheXpert label, not scored
    assert np.isnan(ds.targets[:, 2]).all()  # Fracture: blank everywhere, not scored
    uncertain = np.isnan(ds.targets[:, 0])
    assert uncertain.sum() == len(range(0, len(meta), 5))  # U-Ignore
    assert (read_chexpert(folder, classes, policy="ones").targets[uncertain, 0] == 1).all()  # U-Ones
    assert (read_chexpert(folder, classes, policy="zeros").targets[uncertain, 0] == 0).all()  # U-Zeros
    assert len(read_chexpert(folder, classes, frontal_only=False)) == len(meta) + 1
    assert ds.frame["patient_id"].str.match(r"chexpert-patient\d{5}$").all()
    assert set(ds.frame["sex"]) <= {"M", "F"} and ds.frame["age"].notna().all()
    bad = pd.read_csv(folder / "valid.csv", dtype=str)
    bad.loc[0, "Pleural Effusion"] = "yes"
    bad.to_csv(folder / "valid.csv", index=False)
    with pytest.raises(PublicDatasetError, match="expected 1.0, 0.0, -1.0 or blank|holds"):
        read_chexpert(folder, classes, frontal_only=False)


def test_a_chestxray14_run_is_scored_on_a_chexpert_layout_on_the_shared_classes(data_pack, tmp_path):
    """The issue's check: `evaluate RUN --on ROOT --format chexpert --json` gives AUCs on >= 5 shared classes."""
    ck = tmp_path / "checkpoints"
    train_tiny(ck, "nih-tiny", "--max-images-per-split", "64", "--bootstrap", "10", root=data_pack / "nih",
               preset="nih-resnet50-scratch")
    folder, _ = _chexpert_layout(data_pack, tmp_path / "data", n=200)
    out = run_cli("evaluate", "nih-tiny", "--on", folder, "--format", "chexpert", "--uncertain", "zeros",
                  "--bootstrap", "20", "--no-overlap-check", "--json", env={"CXR_CHECKPOINTS": ck})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    scored = [r for r in res["auc"] if r["class"] != "mean" and r["auc"] is not None]
    assert len(scored) >= 5, [r["class"] for r in scored]
    assert set(res["classes_scored"]) <= set(SHARED.values())
    assert res["reading"] == {"policy": "zeros", "frontal_only": True}
    assert all(r["low"] <= r["auc"] <= r["high"] for r in scored)


def test_mimic_cxr_jpg_is_read_with_its_split_views_and_study_labels(data_pack, tmp_path):
    meta = _pack_rows(data_pack, 30)
    root = tmp_path / "mimic-cxr-jpg"
    labels, split, metadata = [], [], []
    for k, r in meta.iterrows():
        subject, study, dicom = 10000000 + int(r["Patient ID"]), 50000000 + k, f"{k:08x}-dicom"
        rel = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        rel.parent.mkdir(parents=True, exist_ok=True)
        _link(r["file"], rel)
        found = set(r["Finding Labels"].split("|"))
        labels.append({"subject_id": subject, "study_id": study,
                       **{o: (1.0 if SHARED.get(o) in found else 0.0) if o in SHARED else "" for o in CHEXPERT_OBSERVATIONS}})
        split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject,
                      "split": ("train", "validate", "test")[k % 3]})
        metadata.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                         "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
                         "ViewPosition": "LATERAL" if k == 0 else r["View Position"], "Rows": 2544, "Columns": 3056,
                         "StudyDate": 21800506, "StudyTime": 213014.531,
                         "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                         "ViewCodeSequence_CodeMeaning": "postero-anterior",
                         "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    pd.DataFrame(metadata).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    ds = read_mimic(root, ["Effusion", "Cardiomegaly"])
    assert len(ds) == len(meta) - 1 and ds.skipped["not_frontal"] == 1 and ds.skipped["missing_images"] == 0
    assert set(ds.frame["official_split"]) == {"train", "validate", "test"}
    assert ds.frame["patient_id"].str.startswith("mimic-1").all()
    expected = meta["Finding Labels"].str.contains("Effusion").to_numpy()[1:]
    assert (ds.targets[:, 0] == expected).all()
    from engine.evaluation.external import detect_format
    assert detect_format(root) == "mimic"


PADCHEST_COLUMNS = ("ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
                    "ViewPosition_DICOM", "Projection", "MethodProjection", "Labels", "Localizations",
                    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS")
NIH_TO_PADCHEST = {"Effusion": "pleural effusion", "Cardiomegaly": "cardiomegaly", "Atelectasis": "laminar atelectasis",
                   "Nodule": "nodule", "Mass": "mass", "Pneumothorax": "pneumothorax", "No Finding": "normal"}


def test_padchest_is_read_in_its_own_layout_with_16_bit_images(data_pack, tmp_path):
    from PIL import Image

    from engine.data.public import read_padchest

    meta = _pack_rows(data_pack, 24)
    root = tmp_path / "padchest"
    rows = []
    for k, r in meta.iterrows():
        image_id = f"2168401113669640{k:05d}_00-{k:03d}-000.png"
        folder = root / str(k % 3)
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(Image.open(r["file"]).convert("L"), dtype=np.uint16) * 257  # 16 bits, as PadChest's
        Image.fromarray(arr).save(folder / image_id)
        findings = [NIH_TO_PADCHEST[f] for f in r["Finding Labels"].split("|") if f in NIH_TO_PADCHEST]
        rows.append({"ImageID": image_id, "ImageDir": str(k % 3), "StudyDate_DICOM": "20140523", "StudyID": f"s{k}",
                     "PatientID": f"pt{r['Patient ID']}", "PatientBirth": "1950.0",
                     "PatientSex_DICOM": r["Patient Gender"], "ViewPosition_DICOM": "POSTEROANTERIOR",
                     "Projection": "L" if k == 0 else "PA", "MethodProjection": "Manual review of DICOM fields",
                     "Labels": "" if k == 1 else repr(findings or ["unchanged"]), "Localizations": "[]",
                     "LabelsLocalizationsBySentence": "[]", "labelCUIS": "[]", "LocalizationsCUIS": "[]"})
    pd.DataFrame(rows, columns=PADCHEST_COLUMNS).to_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
                                                        index=False)
    ds = read_padchest(root, ["Effusion", "Atelectasis", "Pneumonia"])
    assert len(ds) == len(meta) - 2 and ds.skipped["no_labels"] == 1 and ds.skipped["not_frontal"] == 1
    has = meta["Finding Labels"].str.contains("Effusion").to_numpy()[2:]
    assert (ds.targets[:, 0] == has).all()
    assert (ds.targets[:, 1] == meta["Finding Labels"].str.contains("Atelectasis").to_numpy()[2:]).all()  # "laminar atelectasis"
    assert ds.frame["age"].eq(64).all() and set(ds.frame["sex"]) <= {"M", "F"}
    x = ds.read_original(0)
    assert x.dtype == np.uint8 and x.max() > 0  # the 16-bit PNG windowed by the lab's reader
    from engine.evaluation.external import detect_format
    assert detect_format(root) == "padchest"


def _rsna_layout(data_pack, root, n=12):
    """RSNA Pneumonia's published layout: stage_2_train_labels.csv (one row per box, or one row of
    Target 0) and stage_2_train_images/<patientId>.dcm, the pack's NIH images as DICOMs; every third
    patient has two boxes (in the 1024-px space). Returns the pack rows used."""
    import io as _io

    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = _pack_rows(data_pack, n)
    (root / "stage_2_train_images").mkdir(parents=True)
    rows = []
    for k, r in meta.iterrows():
        pid = f"{k:04d}c0a8-{k:04d}-4c0e-b1f1-9d0a5f0b1c{k:02d}"
        arr = np.asarray(Image.open(r["file"]).convert("L"), dtype=np.uint8)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("x.dcm", {}, file_meta=fm, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = fm.MediaStorageSOPClassUID, \
            fm.MediaStorageSOPInstanceUID, "CR", pid
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = arr.tobytes()
        buf = _io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        (root / "stage_2_train_images" / f"{pid}.dcm").write_bytes(buf.getvalue())
        if k % 3 == 0:  # pneumonia: two boxes
            rows += [{"patientId": pid, "x": 264.0, "y": 152.0, "width": 213.0, "height": 379.0, "Target": 1},
                     {"patientId": pid, "x": 562.0, "y": 152.0, "width": 256.0, "height": 453.0, "Target": 1}]
        else:
            rows.append({"patientId": pid, "x": "", "y": "", "width": "", "height": "", "Target": 0})
    pd.DataFrame(rows).to_csv(root / "stage_2_train_labels.csv", index=False)
    return meta


def test_rsna_pneumonia_is_read_from_its_labels_and_dicoms(data_pack, tmp_path):
    from PIL import Image

    from engine.data.public import read_rsna

    root = tmp_path / "rsna"
    meta = _rsna_layout(data_pack, root)
    ds = read_rsna(root, ["Pneumonia", "Effusion"])
    assert len(ds) == len(meta) and ds.label_columns == {"Pneumonia": "Target"}
    assert ds.targets[:, 0].sum() == len(range(0, len(meta), 3)) and np.isnan(ds.targets[:, 1]).all()
    assert ds.frame.loc[ds.targets[:, 0] == 1, "boxes"].eq(2).all()
    assert ds.read_original(0).shape == np.asarray(Image.open(meta["file"][0])).shape[:2]
    with pytest.raises(PublicDatasetError, match="labels Pneumonia only"):
        read_rsna(root, ["Effusion"])


def test_rsna_boxes_score_a_chestxray14_runs_pneumonia_maps(data_pack, tmp_path):
    """Issue 34: RSNA Pneumonia's boxes are used for localisation as ChestX-ray14's are: `localize
    --format rsna` scores a ChestX-ray14 run's Pneumonia maps against them (pointing game and IoU), and
    a malformed box row is counted, never fatal."""
    from engine.explain.localize import read_rsna_boxes

    root = tmp_path / "rsna"
    meta = _rsna_layout(data_pack, root)
    with open(root / "stage_2_train_labels.csv", "a") as fh:
        fh.write("not-a-patient,12,x,30,40,1\n")  # a box whose y is not a number
    boxes, bad = read_rsna_boxes(root)
    assert len(boxes) == 2 * len(range(0, len(meta), 3)) and bad == 1 and set(boxes["label"]) == {"Pneumonia"}
    assert boxes["image"].str.match(r"^stage_2_train_images/.+\.dcm$").all()
    env = {"CXR_CHECKPOINTS": str(tmp_path / "ck")}
    out = run_cli("train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", *TINY[:2],
                  "--nih-root", str(data_pack / "nih"), "--epochs", "1", "--name", "n", "--image-size", "96",
                  "--load-size", "96", "--max-images-per-split", "32", "--bootstrap", "10", "--num-workers", "0", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_cli("localize", "n", "--format", "rsna", "--root", str(root), "--json", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["format"] == "rsna" and res["boxes_evaluated"] == len(boxes) and res["malformed_rows"] == 1
    assert set(res["per_class"]) == {"Pneumonia", "overall"} and 0 <= res["per_class"]["overall"]["pointing"] <= 1
    out = run_cli("localize", "n", "--format", "rsna", env=env)  # a ChestX-ray14 run does not know an RSNA folder
    assert out.returncode != 0 and "--format rsna needs --root" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("localize", "n", "--format", "rsna", "--root", str(data_pack / "nih"), env=env)
    assert out.returncode != 0 and "stage_2_train_labels.csv" in out.stderr and "Traceback" not in out.stderr


def test_the_cross_dataset_table_puts_a_run_beside_itself_on_every_collection(trained_run, data_pack, tmp_path,
                                                                              monkeypatch):
    """Issue 34: a run scored on every collection it was evaluated on, on the classes they share, with
    intervals; in `report` and on Results (dashboard.ui.trust._across reads the same function)."""
    import shutil

    from engine.runs import Registry
    from engine.evaluation.external import cross_dataset

    ck = tmp_path / "checkpoints"
    shutil.copytree(trained_run[0], ck)
    name = trained_run[1]
    out = run_cli("evaluate", name, "--on", data_pack / "covid", "--name", "again", "--bootstrap", "20",
                  "--no-overlap-check", env={"CXR_CHECKPOINTS": ck})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = cross_dataset(Registry(ck), name)
    assert {r["collection"] for r in rows} == {"own test split", "again"}
    assert all(r["class"] == "COVID-19" and r["low"] <= r["auc"] <= r["high"] and r["images"] for r in rows)
    shown = run_cli("report", "--run", name, env={"CXR_CHECKPOINTS": ck})
    assert shown.returncode == 0 and "Across collections" in shown.stdout and "again" in shown.stdout, shown.stdout[-800:]
    from conftest import dashboard_app

    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    at = dashboard_app("results", run=name).run()
    assert not at.exception, at.exception
    assert any("Across collections" in m.value for m in at.markdown)


def test_a_chexpert_layout_trains_and_transfers_from_a_chestxray14_run_on_its_own_findings(data_pack, tmp_path):
    """Issue 34: a public dataset's folder, as published, is trained on directly (`--task manifest
    --manifest ROOT --manifest-format chexpert`), here transferred from a ChestX-ray14 run: its classes
    are CheXpert's own findings that the folder labels positive, U-Ones reads -1 as positive, patients
    stay in one split, and the layout is read once into the cache (a second run reuses the file)."""
    from engine.data.public import NATIVE, manifest_frame
    from engine.runs.registry import Registry

    ck = tmp_path / "checkpoints"
    train_tiny(ck, "nih-parent", "--max-images-per-split", "64", "--bootstrap", "10", root=data_pack / "nih",
               preset="nih-resnet50-scratch")
    folder, meta = _chexpert_layout(data_pack, tmp_path / "data", n=600)
    rare = ["Edema", "Pneumonia", "Consolidation", "Pneumothorax"]  # a few patients each among 600 pack images
    for name in ("train.csv", "valid.csv"):  # left unmentioned (blank), as CheXpert leaves what a report omits
        pd.read_csv(folder / name, dtype=str).assign(**{c: "" for c in rare}).to_csv(folder / name, index=False)
    frame = manifest_frame(folder, "chexpert", policy="ones")
    classes = [c for c in NATIVE["chexpert"] if c in frame]  # never positive there: not a class of the run
    assert classes == ["Cardiomegaly", "Atelectasis", "Pleural Effusion"], classes
    k = frame["path"].str.extract(r"study(\d+)", expand=False).astype(int) - 1
    assert (frame.loc[k % 5 == 0, "Atelectasis"] == "1").all()  # every fifth image's -1, read as U-Ones
    cache = tmp_path / "cache"
    args = ["train", "--task", "manifest", "--manifest", folder, "--manifest-format", "chexpert", "--uncertain",
            "ones", "--init", "nih-parent", *TINY, "--epochs", "1", "--max-images-per-split", "64", "--bootstrap",
            "10", "--no-dedupe"]
    out = run_cli(*args, "--name", "chex", env={"CXR_CHECKPOINTS": ck, "CXR_CACHE_DIR": cache})
    assert out.returncode == 0, out.stderr[-2000:]
    row = Registry(ck).get("chex")
    assert row.status == "succeeded" and row.config["data"]["manifest_format"] == "chexpert"
    assert row.config["data"]["uncertain"] == "ones" and row.config["model"]["init"].endswith("best.pt")
    preds = {s: pd.read_csv(ck / "chex" / f"predictions_{s}.csv") for s in ("val", "test")}
    for p in preds.values():
        assert [c[len("prob_"):] for c in p.columns if c.startswith("prob_")] == classes
    assert not set(preds["val"]["patient_id"]) & set(preds["test"]["patient_id"])
    written = sorted((cache / "manifests").glob("chexpert-*.csv"))
    assert len(written) == 1
    stamp = written[0].stat().st_mtime_ns
    bad = run_cli(*args[:4], str(tmp_path / "nowhere"), *args[5:], "--name", "chex-bad",
                  env={"CXR_CHECKPOINTS": ck, "CXR_CACHE_DIR": cache})
    assert bad.returncode != 0 and "train.csv" in bad.stderr and "Traceback" not in bad.stderr
    assert Registry(ck).get("chex-bad") is None  # refused before anything was recorded
    out = run_cli(*args, "--name", "chex-again", env={"CXR_CHECKPOINTS": ck, "CXR_CACHE_DIR": cache})
    assert out.returncode == 0 and written[0].stat().st_mtime_ns == stamp  # read once, reused
